"""Microsoft identity platform through msal: authorization-code flow with PKCE, and refresh.

msal does the protocol work (PKCE, nonce and state checks, token cache, refresh-token
rotation); this module only gives it an HTTP client that trusts the configured CA (and, given
an egress gate, reaches only allowed hosts: msal is configured to need no host but the
authority's) and translates its answers into our error tree. Each mailbox has its own
serialized msal token cache, which the vault stores encrypted. msal is synchronous: callers
run these functions in a worker thread.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import msal
import msal.exceptions
import requests

from mailbox_worker.errors import (
    IdentityMisconfigured,
    PermanentError,
    ReauthRequired,
    TransientError,
)
from mailbox_worker.policy.identities import AccountId
from mailbox_worker.policy.scopes import (
    CAPABILITIES,
    MICROSOFT_EMAIL_SCOPE,
    MICROSOFT_SIGN_IN_SCOPES,
)
from mailbox_worker.providers.egress_gate import EgressGate
from mailbox_worker.tokens.identity_client import (
    MISCONFIGURED_RETRY_AFTER,
    AccessToken,
    Grant,
    Refreshed,
)
from mailbox_worker.tokens.oauth_sessions import close_session, new_session


@dataclass(frozen=True)
class MicrosoftSettings:
    """The ``[microsoft]`` settings section: the Entra app registration, and the Graph endpoint
    the composition root hands the Graph provider (see ``config/mailbox-worker.toml``)."""

    client_id: str = ""
    client_secret: str = field(default="", repr=False)
    authority: str = "https://login.microsoftonline.com/organizations"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    ca_file: str = ""
    extra_scopes: tuple[str, ...] = ()
    request_timeout: float = 30.0


log = logging.getLogger(__name__)

# `error` values meaning the grant is gone until the admin consents again.
REAUTH_ERRORS = frozenset({"invalid_grant", "interaction_required", "consent_required"})
TRANSIENT_ERRORS = frozenset({"temporarily_unavailable", "server_error"})
# Refusals of the app registration itself (a wrong or expired secret, AADSTS7000215/7000222;
# a scope the registration cannot have, AADSTS70011) rather than of one tenant or user.
CLIENT_ERRORS = frozenset({"invalid_client", "invalid_scope"})
GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
# Admin consent cannot be given at these authorities (docs/providers.md A8): ask at
# ``organizations`` instead, where the administrator's sign-in names the tenant.
NO_ADMIN_CONSENT_TENANTS = frozenset({"common", "consumers"})


def admin_consent_url(authority: str, client_id: str, scopes: list[str], redirect_uri: str) -> str:
    """The v2.0 admin-consent link for ``client_id`` at ``authority``'s tenant
    (``organizations`` for ``common``), asking ``scopes`` with the sign-in scopes the
    authorization request also asks, so an approval covers everything a user is then asked.

    No ``state``: the answer only tells the administrator what happened (``complete``);
    it connects no mailbox, whose own authorization is started again afterwards.
    """
    parts = urlsplit(authority)
    tenant = next((segment for segment in parts.path.split("/") if segment), "organizations")
    if tenant.lower() in NO_ADMIN_CONSENT_TENANTS:
        tenant = "organizations"
    asked = [*MICROSOFT_SIGN_IN_SCOPES, MICROSOFT_EMAIL_SCOPE, *scopes]
    query = urlencode(
        {"client_id": client_id, "scope": " ".join(asked), "redirect_uri": redirect_uri},
        quote_via=quote,
    )
    return f"{parts.scheme}://{parts.netloc}/{tenant}/v2.0/adminconsent?{query}"


class MicrosoftIdentity:
    """One Entra app registration, used for every Microsoft mailbox.

    Microsoft offers no per-application revocation a non-admin app may call
    (docs/providers.md A7): ``revoke`` returns False; disconnecting destroys the refresh token we
    held, and the tenant admin removes the app's consent in Entra to revoke it there too.
    """

    provider = "microsoft"
    capabilities: frozenset[str] = CAPABILITIES

    def __init__(self, settings: MicrosoftSettings, egress: EgressGate | None = None) -> None:
        self._settings = settings
        self._http = new_session(settings.ca_file, egress)
        self._http_cache: dict[Any, Any] = {}
        self._cache_lock = threading.Lock()

    def revoke(self, cache_blob: str) -> bool:
        return False

    def admin_consent_url(self, scopes: list[str], redirect_uri: str) -> str | None:
        return admin_consent_url(
            self._settings.authority, self._settings.client_id, scopes, redirect_uri
        )

    def revoke_token(self, token: str) -> None:
        raise NotImplementedError("Microsoft has no token revocation endpoint for this app")

    def revocable_token(self, cache_blob: str) -> str | None:
        return None

    def close(self) -> None:
        """Close the pooled HTTP connections to the identity platform."""
        close_session(self._http)

    def _app(self, cache: msal.SerializableTokenCache | None = None) -> Any:
        with self._cache_lock:
            return msal.ConfidentialClientApplication(
                self._settings.client_id,
                client_credential=self._settings.client_secret,
                authority=self._settings.authority,
                token_cache=cache,
                http_client=self._http,
                http_cache=self._http_cache,
                # msal would otherwise ask login.microsoftonline.com for instance metadata
                # (authority aliases, when a silent refresh finds nothing) and, with
                # MSAL_FORCE_REGION set, use a regional host: only the configured authority
                # is an allowed destination (docs/privacy.md PP-5). Our caches hold one
                # authority, so aliases never matter.
                instance_discovery=False,
                azure_region=False,
                timeout=self._settings.request_timeout,
            )

    def start(self, scopes: list[str], redirect_uri: str, login_hint: str | None) -> dict[str, Any]:
        """A new authorization-code flow (msal's dict, with PKCE verifier, nonce and state)."""
        try:
            with warnings.catch_warnings():
                # msal recommends response_mode=form_post; the query mode we use is protected
                # by PKCE (S256), a single-use expiring state and the nonce, all checked.
                warnings.filterwarnings("ignore", message="response_mode", category=UserWarning)
                flow: dict[str, Any] = self._app().initiate_auth_code_flow(
                    [*scopes, MICROSOFT_EMAIL_SCOPE],
                    redirect_uri=redirect_uri,
                    login_hint=login_hint,
                    prompt="select_account",
                )
        except (requests.RequestException, ValueError) as error:
            raise TransientError(
                f"the Microsoft authority is unreachable ({type(error).__name__})",
                code="identity_unavailable",
            ) from None
        return flow

    def redeem(self, flow: dict[str, Any], response: dict[str, str]) -> Grant:
        """Exchange the redirect's code for tokens; raises on a denied or invalid answer."""
        if not response.get("code"):
            raise PermanentError("the authorization response carries no code", code="code_rejected")
        if not response.get("state") or response.get("state") != flow.get("state"):
            raise PermanentError(
                "the authorization response does not match the flow", code="state_invalid"
            )
        cache = msal.SerializableTokenCache()
        app = self._app(cache)
        try:
            result = app.acquire_token_by_auth_code_flow(flow, response)
        except (requests.RequestException, msal.exceptions.MsalServiceError, ValueError) as error:
            # ValueError: an answer that is not JSON (a proxy's 429 or 5xx page).
            raise TransientError(
                f"token endpoint unavailable ({type(error).__name__})", code="identity_unavailable"
            ) from None
        if "error" in result:
            if result["error"] in TRANSIENT_ERRORS:
                raise TransientError(
                    f"the identity platform is unavailable ({result['error']})",
                    code=str(result["error"]),
                )
            raise PermanentError(
                f"the identity platform refused the code ({result['error']})", code="code_rejected"
            )
        claims = result.get("id_token_claims") or {}
        return Grant(
            cache=cache.serialize(),
            address=signed_in_address(claims),
            granted_scopes=granted_scopes(result, flow),
            account=signed_in_account(claims),
        )

    def refresh(self, cache_blob: str, scopes: list[str], *, force: bool) -> Refreshed:
        """A valid access token from the cache, refreshing (and rotating) when needed."""
        cache = msal.SerializableTokenCache()
        cache.deserialize(cache_blob)
        app = self._app(cache)
        accounts = app.get_accounts()
        if not accounts:
            raise ReauthRequired("no account in the token cache", code="no_grant")
        try:
            result = app.acquire_token_silent_with_error(scopes, accounts[0], force_refresh=force)
        except (requests.RequestException, msal.exceptions.MsalServiceError) as error:
            # MsalServiceError: msal's HTTP layer raising for a 5xx (also replayed from its
            # short-lived cache of throttled answers).
            raise TransientError(
                f"token endpoint unavailable ({type(error).__name__})", code="identity_unavailable"
            ) from None
        except ValueError:
            raise TransientError(
                "the token endpoint answered something that is not JSON",
                code="identity_unavailable",
            ) from None
        if result is None:
            raise ReauthRequired("the token cache holds no refresh token", code="no_grant")
        if "error" in result:
            raise refresh_error(result)
        token = AccessToken(
            token=str(result["access_token"]),
            expires_at=time.time() + float(result.get("expires_in", 0)),
        )
        from_idp = result.get("token_source") == "identity_provider"
        return Refreshed(
            access_token=token,
            cache=cache.serialize() if cache.has_state_changed else None,
            from_identity_provider=from_idp,
        )


def refresh_error(result: dict[str, Any]) -> Exception:
    """Our error for a refresh answered with an OAuth ``error`` (docs/providers.md A5)."""
    error = str(result.get("error"))
    codes = result.get("error_codes") or []
    detail = f"{error} (AADSTS{codes[0]})" if codes else error
    if error in REAUTH_ERRORS:
        return ReauthRequired(f"the grant is no longer valid: {detail}", code=error)
    if error in TRANSIENT_ERRORS:
        return TransientError(f"the identity platform is unavailable: {detail}", code=error)
    if error in CLIENT_ERRORS:
        return IdentityMisconfigured(
            f"the identity platform refused our app: {detail}; check the app registration",
            code="identity_misconfigured",
            retry_after=MISCONFIGURED_RETRY_AFTER,
        )
    return TransientError(
        f"the identity platform refused the refresh: {detail}", code="identity_rejected"
    )


def signed_in_account(claims: Mapping[str, Any]) -> AccountId | None:
    """Who signed in, from id_token claims: ``tid`` and ``oid``, lower-cased GUIDs.

    Entra documents both as GUIDs it never reuses (``oid`` needs the ``profile`` scope, which
    msal always asks). None unless both are GUIDs: such a grant cannot be pinned.
    """
    tenant, subject = _guid(claims.get("tid")), _guid(claims.get("oid"))
    if tenant is None or subject is None:
        return None
    return AccountId(tenant=tenant, subject=subject)


def signed_in_address(claims: Mapping[str, Any]) -> str:
    """The mailbox address id_token claims name, unvalidated; "" when they name none.

    ``email`` is the mail attribute; ``preferred_username`` the sign-in name (UPN), used only
    when the user has no mail attribute. Neither is verified by Entra in every tenant: the
    mailbox is pinned by ``signed_in_account``, the address is only where mail comes from.
    """
    value = claims.get("email") or claims.get("preferred_username") or ""
    return value if isinstance(value, str) else ""


def _guid(value: object) -> str | None:
    if not isinstance(value, str) or not GUID.fullmatch(value):
        return None
    return value.lower()


def granted_scopes(answer: dict[str, Any], flow: dict[str, Any]) -> tuple[str, ...]:
    """The scopes a code redemption granted.

    ``scope`` is optional in the token endpoint's answer; absent, it means the scopes the
    flow requested (RFC 6749 section 5.1, docs/providers.md A3).
    """
    scope = answer.get("scope")
    if scope is None or scope == "":
        return tuple(str(item) for item in flow.get("scope") or ())
    if isinstance(scope, str):
        return tuple(scope.split())
    return tuple(str(item) for item in scope)
