"""Google OAuth 2.0 through google-auth-oauthlib (code + PKCE) and google-auth (refresh).

The libraries do the protocol; this module gives them an HTTP session that trusts the
configured CA, reads what was *granted* (granular consent may drop scopes: oauthlib reports
that as a ``Warning`` carrying the token, which we inspect rather than trust blindly), learns
the address from the id_token received directly from the token endpoint over TLS, and maps
failures onto our error tree. The stored blob holds the access and refresh tokens only —
never the client secret, which comes from settings.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import google.auth.exceptions
import google.auth.jwt
import google.auth.transport.requests
import google.oauth2.credentials
import requests
from google_auth_oauthlib.flow import Flow

from mailbox_worker.errors import (
    IdentityMisconfigured,
    PermanentError,
    PolicyViolation,
    ReauthRequired,
    TransientError,
)
from mailbox_worker.policy.identities import AccountId
from mailbox_worker.policy.scopes import CAPABILITIES
from mailbox_worker.providers.egress_gate import EgressGate
from mailbox_worker.providers.google_gate import GoogleEndpoints, GoogleOperationGate, gate_session
from mailbox_worker.tokens.identity_client import (
    MISCONFIGURED_RETRY_AFTER,
    AccessToken,
    Grant,
    Refreshed,
)
from mailbox_worker.tokens.oauth_sessions import (
    close_session,
    configure_session,
    new_session,
    restrict_session,
)


@dataclass(frozen=True)
class GoogleSettings:
    """The ``[google]`` settings section (see ``config/mailbox-worker.toml``)."""

    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    auth_url: str = "https://accounts.google.com/o/oauth2/v2/auth"
    token_url: str = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
    revoke_url: str = "https://oauth2.googleapis.com/revoke"
    userinfo_url: str = "https://openidconnect.googleapis.com/v1/userinfo"
    gmail_url: str = "https://gmail.googleapis.com/"
    """google-api-python-client's ``api_endpoint`` (docs/providers.md D7): an origin only,
    since uploads go to its host and port whatever its path."""
    transport: str = "gmail_api"
    """How Google mailboxes send: only ``gmail_api``; ``smtp`` is refused at start-up
    (``policy.google_operations.GMAIL_OVER_SMTP_REFUSED``, docs/privacy.md LU-1)."""
    drafts: bool = True
    """Whether Google mailboxes may have the ``draft`` capability. Drafts need
    ``gmail.compose``, a restricted scope (verification plus an annual security assessment,
    docs/providers.md D6); false offers Gmail for sending only (``gmail.send``, sensitive),
    and a Google mailbox asking for drafts is refused (``capability_not_offered``)."""
    ca_file: str = ""
    request_timeout: float = 30.0

    def endpoints(self) -> GoogleEndpoints:
        """The URLs the Google operation allow-list is relative to (docs/privacy.md LU-3)."""
        return GoogleEndpoints(
            gmail=self.gmail_url,
            token=self.token_url,
            revoke=self.revoke_url,
            userinfo=self.userinfo_url,
        )


REFRESH_MARGIN = 300.0
# Refusals of our OAuth client itself, not of one user's grant (RFC 6749 5.2).
CLIENT_ERRORS = frozenset({"invalid_client", "unauthorized_client", "invalid_scope"})
SUBJECT = re.compile(r"[\x21-\x7e]{1,255}")


class GoogleIdentity:
    """One Google OAuth client, used for every Google mailbox.

    Every request its libraries make goes through ``gate`` (default: one over the settings'
    URLs that only logs refusals), which lets only the token, revoke and userinfo endpoints
    through (docs/privacy.md LU-3), and, given ``egress``, that gate's check too (PP-5).
    """

    provider = "google"

    def __init__(
        self,
        settings: GoogleSettings,
        gate: GoogleOperationGate | None = None,
        egress: EgressGate | None = None,
    ) -> None:
        self._settings = settings
        self.capabilities = CAPABILITIES if settings.drafts else CAPABILITIES - {"draft"}
        self._gate = gate if gate is not None else GoogleOperationGate(settings.endpoints())
        self._egress = egress
        self._http = gate_session(new_session(settings.ca_file, egress), self._gate)
        self._client_config = {
            "web": {
                "client_id": settings.client_id,
                "client_secret": settings.client_secret,
                "auth_uri": settings.auth_url,
                "token_uri": settings.token_url,
            }
        }

    def close(self) -> None:
        close_session(self._http)

    def _flow(self, scopes: list[str], redirect_uri: str, **kwargs: Any) -> Any:
        flow = Flow.from_client_config(
            self._client_config, scopes=scopes, redirect_uri=redirect_uri, **kwargs
        )
        configure_session(flow.oauth2session, self._settings.ca_file)
        gate_session(flow.oauth2session, self._gate)
        if self._egress is not None:
            restrict_session(flow.oauth2session, self._egress)
        flow.oauth2session.register_compliance_hook("access_token_response", raise_if_unavailable)
        return flow

    @staticmethod
    def _fetch(flow: Any, code: str) -> dict[str, Any]:
        try:
            return dict(flow.fetch_token(code=code))
        finally:
            close_session(flow.oauth2session)  # each Flow owns a requests session

    def start(self, scopes: list[str], redirect_uri: str, login_hint: str | None) -> dict[str, Any]:
        everything = [*scopes, "openid", "email"]
        flow = self._flow(everything, redirect_uri, autogenerate_code_verifier=True)
        extra = {"login_hint": login_hint} if login_hint else {}
        url, state = flow.authorization_url(access_type="offline", prompt="consent", **extra)
        return {
            "auth_uri": url,
            "state": state,
            "scopes": everything,
            "redirect_uri": redirect_uri,
            "code_verifier": flow.code_verifier,
        }

    def redeem(self, flow_state: dict[str, Any], response: dict[str, str]) -> Grant:
        if response.get("state") != flow_state["state"] or not response.get("code"):
            raise PermanentError("the authorization response does not match", code="state_invalid")
        flow = self._flow(
            list(flow_state["scopes"]),
            flow_state["redirect_uri"],
            state=flow_state["state"],
            code_verifier=flow_state["code_verifier"],
        )
        try:
            token = self._fetch(flow, response["code"])
        except Warning as changed:  # granted scopes differ from those asked: inspect them
            token = dict(getattr(changed, "token", {}))
        except requests.RequestException as error:  # unreachable, or a 5xx/429 (the hook)
            raise TransientError(
                f"Google's token endpoint is unavailable ({type(error).__name__})",
                code="identity_unavailable",
            ) from None
        except PolicyViolation:  # the operation gate refused the request: say so, unchanged
            raise
        except Exception as error:  # oauthlib raises its own errors for error answers
            raise PermanentError(
                f"Google refused the code ({type(error).__name__})", code="code_rejected"
            ) from None
        if "access_token" not in token:
            raise PermanentError("Google answered without an access token", code="code_rejected")
        scope = token.get("scope") or []
        granted = tuple(scope.split() if isinstance(scope, str) else scope)
        claims = (
            google.auth.jwt.decode(token["id_token"], verify=False) if token.get("id_token") else {}
        )
        blob = {
            "access_token": token["access_token"],
            "refresh_token": token.get("refresh_token"),
            "expires_at": time.time() + float(token.get("expires_in", 0)),
            "scopes": list(granted),
        }
        return Grant(
            cache=json.dumps(blob),
            address=signed_in_address(claims),
            granted_scopes=granted,
            account=signed_in_account(claims),
        )

    def refresh(self, cache_blob: str, scopes: list[str], *, force: bool) -> Refreshed:
        blob = json.loads(cache_blob)
        if not force and blob.get("expires_at", 0) - time.time() > REFRESH_MARGIN:
            token = AccessToken(blob["access_token"], float(blob["expires_at"]))
            return Refreshed(token, None, from_identity_provider=False)
        if not blob.get("refresh_token"):
            raise ReauthRequired("no refresh token was granted", code="no_grant")
        credentials = google.oauth2.credentials.Credentials(
            token=None,
            refresh_token=blob["refresh_token"],
            token_uri=self._settings.token_url,
            client_id=self._settings.client_id,
            client_secret=self._settings.client_secret,
            scopes=blob.get("scopes") or None,
        )
        try:
            credentials.refresh(google.auth.transport.requests.Request(self._http))
        except google.auth.exceptions.RefreshError as error:
            if grant_is_dead(error):
                raise ReauthRequired(
                    "Google says the grant is gone", code="invalid_grant"
                ) from None
            refused = _oauth_error(error)
            if refused in CLIENT_ERRORS:
                raise IdentityMisconfigured(
                    f"Google refused our OAuth client ({refused}); check its configuration",
                    code="identity_misconfigured",
                    retry_after=MISCONFIGURED_RETRY_AFTER,
                ) from None
            raise TransientError(
                "Google's token endpoint failed", code="identity_unavailable"
            ) from None
        except google.auth.exceptions.TransportError:
            raise TransientError(
                "Google's token endpoint is unreachable", code="identity_unavailable"
            ) from None
        expiry = credentials.expiry or dt.datetime.now(dt.UTC).replace(tzinfo=None)
        expires_at = expiry.replace(tzinfo=dt.UTC).timestamp()
        blob.update(
            access_token=credentials.token,
            refresh_token=credentials.refresh_token or blob["refresh_token"],
            expires_at=expires_at,
        )
        return Refreshed(
            AccessToken(str(credentials.token), expires_at),
            json.dumps(blob),
            from_identity_provider=True,
        )

    def revocable_token(self, cache_blob: str) -> str | None:
        blob = json.loads(cache_blob)
        token = blob.get("refresh_token") or blob.get("access_token")
        return str(token) if token else None

    def revoke(self, cache_blob: str) -> bool:
        token = self.revocable_token(cache_blob)
        if token:
            self.revoke_token(token)
        return True

    def admin_consent_url(self, scopes: list[str], redirect_uri: str) -> str | None:
        return None  # Google has no admin-consent link to offer (docs/providers.md A8 is Entra)

    def revoke_token(self, token: str) -> None:
        """Revoke the whole grant; an already dead token counts as revoked."""
        try:
            answer = self._http.post(
                self._settings.revoke_url,
                data={"token": token},
                timeout=self._settings.request_timeout,
            )
        except requests.RequestException as error:
            raise TransientError(
                f"Google's revoke endpoint is unreachable ({type(error).__name__})",
                code="revoke_unavailable",
            ) from None
        if answer.status_code == 200:
            return
        if answer.status_code == 400 and _error(answer) == "invalid_token":
            return  # already revoked or expired: nothing left to revoke
        raise TransientError(
            f"Google's revoke endpoint answered {answer.status_code}", code="revoke_failed"
        )


def signed_in_account(claims: Mapping[str, Any]) -> AccountId | None:
    """Who signed in, from id_token claims: ``sub``, unique among all Google Accounts and
    never reused. None unless it is 1 to 255 visible ASCII characters (OpenID Connect Core
    2: at most 255 ASCII characters): such a grant cannot be pinned.
    """
    subject = claims.get("sub")
    if not isinstance(subject, str) or not SUBJECT.fullmatch(subject):
        return None
    return AccountId(tenant=None, subject=subject)


def signed_in_address(claims: Mapping[str, Any]) -> str:
    """The verified ``email`` claim, unvalidated; "" when absent or not verified.

    ``email_verified`` is a boolean, which older Google tokens spelt as a string.
    """
    value = claims.get("email")
    verified = str(claims.get("email_verified", True)).lower() != "false"
    return value if isinstance(value, str) and verified else ""


def raise_if_unavailable(response: requests.Response) -> requests.Response:
    """Before oauthlib parses a token answer: a 5xx or 429 (an HTML page from a proxy, say)
    is an outage, not a refusal of the code."""
    if response.status_code >= 500 or response.status_code == 429:
        raise requests.HTTPError(f"token endpoint answered {response.status_code}")
    return response


def _oauth_error(error: google.auth.exceptions.RefreshError) -> str:
    """The ``error`` of the token endpoint's JSON body google-auth attached, if any."""
    for detail in error.args:
        if isinstance(detail, dict):
            return str(detail.get("error", ""))
    return ""


def grant_is_dead(error: google.auth.exceptions.RefreshError) -> bool:
    """Whether a refresh failure means the user must consent again (docs/providers.md C4).

    google-auth passes the token endpoint's JSON body as an argument (``invalid_grant`` for a
    revoked, expired or capped grant) — except for ``invalid_grant`` with ``error_subtype``
    ``invalid_rapt``/``rapt_required`` (a Workspace reauthentication policy), which it turns
    into a message of its own.
    """
    if _oauth_error(error) == "invalid_grant":
        return True
    text = str(error)
    return "invalid_grant" in text or "Reauthentication is needed" in text


def _error(answer: requests.Response) -> str:
    try:
        return str(answer.json().get("error", ""))
    except ValueError:
        return ""
