"""Google OAuth error answers (docs/providers.md C3, C5).

Token and revoke errors are a bare JSON object ``{"error", "error_description"}``: HTTP 400,
``invalid_client`` / ``unauthorized_client`` 401. Authorize errors that cannot be redirected
(unknown client, bad redirect URI) are an HTML page "Error 4xx: <error>" with status 400.
Texts marked "unconfirmed" in docs/providers.md are best guesses kept in this one place.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from aiohttp import web

NO_STORE = {
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
}


@dataclass(frozen=True)
class GoogleError:
    """An OAuth error as Google words it."""

    error: str
    description: str
    status: int = 400


class GoogleFailure(Exception):
    """Raised by handlers to answer with ``error``; rendered at the edge."""

    def __init__(self, error: GoogleError) -> None:
        super().__init__(f"{error.error}: {error.description}")
        self.error = error


def json_error(failure: GoogleError) -> web.Response:
    """The token / revoke endpoint's error response."""
    return web.json_response(
        {"error": failure.error, "error_description": failure.description},
        status=failure.status,
        headers=NO_STORE,
    )


def html_error(failure: GoogleError, shown_status: int = 400) -> web.Response:
    """Google's "Access blocked" page for an authorize request it cannot send back."""
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Error 400 - Google Accounts</title></head><body>"
        "<h1>Access blocked: Authorization Error</h1>"
        f"<p id='error'>Error {shown_status}: {html.escape(failure.error)}</p>"
        f"<p id='error_description'>{html.escape(failure.description)}</p></body></html>"
    )
    return web.Response(status=400, text=page, content_type="text/html")


def missing_parameter(name: str) -> GoogleError:
    """A required parameter is absent."""
    return GoogleError("invalid_request", f"Missing required parameter: {name}")


def invalid_scopes(scopes: list[str]) -> GoogleError:
    """Unknown scope values (Google's wording on its error page)."""
    return GoogleError(
        "invalid_scope", "Some requested scopes were invalid. {invalid=[" + ", ".join(scopes) + "]}"
    )


UNKNOWN_CLIENT = GoogleError("invalid_client", "The OAuth client was not found.", status=401)
BAD_SECRET = GoogleError("invalid_client", "Unauthorized", status=401)
MISSING_SECRET = GoogleError("invalid_request", "client_secret is missing.")
FOREIGN_TOKEN = GoogleError("unauthorized_client", "Unauthorized", status=401)
BAD_CODE = GoogleError("invalid_grant", "Bad Request")
MALFORMED_CODE = GoogleError("invalid_grant", "Malformed auth code.")
MISSING_VERIFIER = GoogleError("invalid_grant", "Missing code verifier.")
BAD_VERIFIER = GoogleError("invalid_grant", "Invalid code verifier.")
REDIRECT_MISMATCH = GoogleError("redirect_uri_mismatch", "Bad Request")
DEAD_TOKEN = GoogleError("invalid_grant", "Token has been expired or revoked.")
REVOKE_UNKNOWN = GoogleError("invalid_token", "Token expired or revoked")
ACCESS_DENIED = GoogleError("access_denied", "The user denied the request.")


def unsupported_grant_type(grant_type: str) -> GoogleError:
    """Neither ``authorization_code`` nor ``refresh_token``."""
    return GoogleError("unsupported_grant_type", f"Invalid grant_type: {grant_type}")


def fault_error(status: int) -> GoogleError:
    """The body of an injected failure (shapes unconfirmed; retryable ones as google-auth sees)."""
    if status == 429:
        return GoogleError("rate_limit_exceeded", "Rate Limit Exceeded", status)
    if status == 503:
        return GoogleError("temporarily_unavailable", "The service is currently unavailable.", 503)
    if status >= 500:
        return GoogleError("internal_failure", "Backend Error", status)
    return GoogleError("invalid_request", "Bad Request", status)
