"""Microsoft identity error answers, in the exact shape of docs/providers.md A5.

Token endpoint errors are JSON with ``error``, ``error_description`` (``AADSTSnnnn: text`` then
``Trace ID``, ``Correlation ID`` and ``Timestamp`` lines separated by CRLF), ``error_codes``,
``timestamp``, ``trace_id``, ``correlation_id`` and ``error_uri``. HTTP 400, except
``invalid_client`` which is 401.
"""

from __future__ import annotations

import datetime
import html
import json
import uuid
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True)
class IdentityError:
    """An OAuth error with its AADSTS number."""

    error: str
    code: int
    text: str
    status: int = 400
    suberror: str | None = None

    @property
    def description(self) -> str:
        """``AADSTSnnnn: text`` (without the trace lines)."""
        return f"AADSTS{self.code}: {self.text}"


class IdentityFailure(Exception):
    """Raised by handlers to answer with ``error``; rendered at the edge."""

    def __init__(self, error: IdentityError) -> None:
        super().__init__(error.description)
        self.error = error


def timestamp(moment: datetime.datetime) -> str:
    """``moment`` (UTC) in Entra's timestamp format, e.g. ``2024-01-09 02:02:12Z``."""
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def error_body(
    failure: IdentityError, moment: datetime.datetime, correlation_id: str | None = None
) -> dict[str, object]:
    """The token endpoint's JSON error document for ``failure``, stamped ``moment``."""
    trace_id = str(uuid.uuid4())
    correlation = correlation_id or str(uuid.uuid4())
    stamp = timestamp(moment)
    body: dict[str, object] = {
        "error": failure.error,
        "error_description": (
            f"{failure.description}\r\nTrace ID: {trace_id}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {stamp}"
        ),
        "error_codes": [failure.code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={failure.code}",
    }
    if failure.suberror:
        body["suberror"] = failure.suberror
    return body


def json_error(
    failure: IdentityError, request: web.Request, moment: datetime.datetime
) -> web.Response:
    """The token endpoint's error response (400, or 401 for invalid_client) at ``moment``."""
    correlation = request.headers.get("client-request-id")
    body = error_body(failure, moment, correlation)
    response = web.Response(
        status=failure.status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
    )
    response.headers["x-ms-request-id"] = str(body["trace_id"])
    if correlation:
        response.headers["client-request-id"] = correlation
    return response


def html_error(failure: IdentityError, moment: datetime.datetime) -> web.Response:
    """The page Entra shows at ``moment`` when it cannot redirect back (bad client or URI)."""
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Sign in to your account</title>"
        "</head><body><h1>Sorry, but we're having trouble signing you in.</h1>"
        f"<p id='error'>{html.escape(failure.description)}</p>"
        f"<p>Timestamp: {timestamp(moment)}</p></body></html>"
    )
    return web.Response(status=400, text=page, content_type="text/html")


# The errors the sandbox raises, by situation. Codes and texts follow docs/providers.md A5 where it
# has them; the ones marked "unconfirmed" there are best guesses kept in this one place.


def missing_parameter(name: str) -> IdentityError:
    """A required request parameter is absent."""
    return IdentityError(
        "invalid_request",
        900144,
        f"The request body must contain the following parameter: '{name}'.",
    )


def unknown_client(client_id: str, tenant: str) -> IdentityError:
    """No application with this client id."""
    return IdentityError(
        "unauthorized_client",
        700016,
        f"Application with identifier '{client_id}' was not found in the directory '{tenant}'. "
        "This can happen if the application has not been installed by the administrator of the "
        "tenant or consented to by any user in the tenant. You may have sent your "
        "authentication request to the wrong tenant.",
    )


def redirect_mismatch(redirect_uri: str, client_id: str) -> IdentityError:
    """The redirect URI is not registered for the client."""
    return IdentityError(
        "invalid_request",
        50011,
        f"The redirect URI '{redirect_uri}' specified in the request does not match the redirect "
        f"URIs configured for the application '{client_id}'. Make sure the redirect URI sent in "
        "the request matches one added to your application in the Azure portal.",
    )


def invalid_scope(scope: str) -> IdentityError:
    """A scope value the sandbox does not know."""
    return IdentityError(
        "invalid_scope",
        70011,
        f"The provided value for the input parameter 'scope' is not "
        f"valid. The scope {scope} is not valid.",
    )


def invalid_secret(client_id: str) -> IdentityError:
    """Wrong client secret."""
    return IdentityError(
        "invalid_client",
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the "
        f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
        status=401,
    )


def missing_secret() -> IdentityError:
    """A confidential client sent no credential."""
    return IdentityError(
        "invalid_client",
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or "
        "'client_secret'.",
        status=401,
    )


def invalid_grant(code: int, text: str, suberror: str | None = None) -> IdentityError:
    """Any ``invalid_grant`` (codes, refresh tokens, PKCE)."""
    return IdentityError("invalid_grant", code, text, suberror=suberror)


CODE_REDEEMED = invalid_grant(
    54005,
    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use "
    "an existing refresh token.",
)
CODE_EXPIRED = invalid_grant(
    70008,
    "The provided authorization code or refresh token has expired due to inactivity. Send a new "
    "interactive authorization request for this user and resource.",
)
PKCE_MISMATCH = invalid_grant(
    501481,
    "The Code_Verifier does not match the code_challenge supplied in the authorization request.",
)
REFRESH_INACTIVE = invalid_grant(
    700082,
    "The refresh token has expired due to inactivity. The token was issued on a date and was "
    "inactive for 90.00:00:00.",
)
SESSIONS_REVOKED = invalid_grant(
    50173,
    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The "
    "user might have changed or reset their password. The grant was issued earlier and the "
    "TokensValidFrom date (before which tokens are not valid) for this user is later.",
)
INTERACTION_REQUIRED = IdentityError(
    "interaction_required",
    50076,
    "Due to a configuration change made by your administrator, or because you moved to a new "
    "location, you must use multi-factor authentication to access "
    "'00000003-0000-0000-c000-000000000000'.",
)
UNSUPPORTED_GRANT_TYPE = IdentityError(
    "unsupported_grant_type", 70003, "The app requested an unsupported grant type."
)


def malformed_grant(parameter: str) -> IdentityError:
    """An unknown, foreign or mismatched code / refresh token / redirect URI."""
    return invalid_grant(70000, f"The provided value for the '{parameter}' parameter is not valid.")


def consent_missing(client_id: str, name: str) -> IdentityError:
    """The user has not consented (or consent was removed) to what is asked."""
    return invalid_grant(
        65001,
        f"The user or administrator has not consented to use the application with ID "
        f"'{client_id}' named '{name}'. Send an interactive authorization request for this user "
        "and resource.",
        suberror="consent_required",
    )


def user_declined() -> IdentityError:
    """The user pressed cancel on the consent page."""
    return IdentityError("access_denied", 65004, "User declined to consent to access the app.")


def admin_approval_required(application_name: str) -> IdentityError:
    """The user's tenant lets only an administrator consent ("Need admin approval").

    The AADSTS number and text are Entra's documented ones (docs/providers.md A8); the
    ``error`` value the redirect carries with them is not documented: ``access_denied`` is a
    best guess.
    """
    return IdentityError(
        "access_denied",
        90094,
        f"{application_name} needs permission to access resources in your organization that "
        "only an admin can grant. Ask an admin to grant permission to this app before you can "
        "use it.",
    )
