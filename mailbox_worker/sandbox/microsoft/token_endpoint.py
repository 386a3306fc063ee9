"""``POST /{tenant}/oauth2/v2.0/token``: the authorization-code and refresh-token grants.

Answers exactly as docs/providers.md A3/A4/A5: ``token_type``, ``scope`` (echoed in the form the
client used), ``expires_in``, ``ext_expires_in``, ``access_token``; ``refresh_token`` when the
grant includes ``offline_access``; ``id_token`` for ``openid``; ``client_info`` when the
client asked with ``client_info=1`` (msal always does).

Both grants honour the request's ``scope`` the same way: the access token is for the scopes
asked (each known, else AADSTS70011), or for the whole grant when none are asked. A code's
token leaves out what the user did not grant at the consent page; a refresh asking for a
permission without consent is AADSTS65001. The grant itself — what the authorization asked
for, ``offline_access`` included — stays with the refresh token: a redemption or refresh asking
for less does not narrow it, and every refresh returns a new refresh token whether or not its
``scope`` repeats ``offline_access`` (A4). The old one stays valid, unless a scenario switch
killed it. Switches (``MicrosoftState.apply_scenario``) and what they produce:

* ``revoke_sessions`` — every refresh token the user holds → ``invalid_grant`` AADSTS50173;
* ``refresh_token_inactive`` — the user's current refresh tokens → ``invalid_grant`` AADSTS700082;
* ``interaction_required`` — any refresh → ``interaction_required`` AADSTS50076 until ``reset``;
* ``consent_removed`` — refreshes for the removed scopes → ``invalid_grant`` AADSTS65001;
* ``user_consent_blocked`` — the user's tenant allows no user consent: until an administrator
  consented (``MicrosoftState.grant_admin_consent``), the authorize endpoint answers a sign-in
  with ``error=access_denied`` and AADSTS90094 (``authorize``; docs/providers.md A8). ``reset``
  lifts it.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..clients import Client
from ..controls import Fault
from ..faults import with_fault
from ..signing import SigningKey, base64url
from ..token_requests import (
    ClientRefusal,
    ClientRefused,
    authenticate_client,
    read_token_form,
    verifier_matches,
)
from . import identity_errors as errors
from . import scopes as scope_rules
from .authorize import base_url, resolve_tenant
from .identity_errors import IdentityError, IdentityFailure
from .state import REFRESH_TOKEN_INACTIVITY, AccessToken, MicrosoftState, RefreshToken, User
from .token_values import access_token, client_info, refresh_token

GRAPH_APPLICATION_ID = "00000003-0000-0000-c000-000000000000"
ID_TOKEN_LIFETIME = 3600


@dataclass(frozen=True)
class Issue:
    """What a token answer is for: ``scopes`` asked now, within the ``grant`` (the scopes of
    the authorization, kept by its refresh tokens); ``nonce`` of the authorization request."""

    scopes: list[str]
    grant: list[str]
    nonce: str | None


class TokenEndpoint:
    """The token endpoint handler."""

    def __init__(self, state: MicrosoftState, signing_key: SigningKey) -> None:
        self._state = state
        self._signing_key = signing_key

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes this handler serves."""
        return [web.post("/{tenant}/oauth2/v2.0/token", self.token)]

    async def token(self, request: web.Request) -> web.StreamResponse:
        """Redeem a code or a refresh token."""
        fields, grant_type = await read_token_form(request, self._state, "identity.token")

        async def process() -> web.StreamResponse:
            try:
                return self._grant(request, grant_type, fields)
            except IdentityFailure as failure:
                return errors.json_error(failure.error, request, self._state.clock.utcnow())

        operations = (f"identity.token.{grant_type}", "identity.token")
        return await with_fault(
            request,
            self._state,
            operations,
            process,
            lambda fault: self._fault_answer(request, fault),
        )

    def _grant(self, request: web.Request, grant_type: str, fields: dict[str, str]) -> web.Response:
        segment = request.match_info["tenant"]
        resolve_tenant(self._state, segment)
        if not grant_type:
            raise IdentityFailure(errors.missing_parameter("grant_type"))
        client = self._authenticate(request, fields, segment)
        if grant_type == "authorization_code":
            user, scopes, nonce = self._redeem_code(client, fields)
            grant = self._state.codes[fields["code"]].scopes
        elif grant_type == "refresh_token":
            user, scopes = self._redeem_refresh_token(client, fields)
            grant, nonce = self._state.refresh_tokens[fields["refresh_token"]].scopes, None
        else:
            raise IdentityFailure(errors.UNSUPPORTED_GRANT_TYPE)
        body = self._issue(
            request, client, user, Issue(scopes, grant, nonce), fields.get("client_info") == "1"
        )
        return web.json_response(
            body, headers={"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"}
        )

    def _authenticate(
        self, request: web.Request, fields: Mapping[str, str], segment: str
    ) -> Client:
        """The calling client, or Entra's refusal (AADSTS7000218, 700016, 7000215)."""
        try:
            return authenticate_client(request, fields, self._state.clients)
        except ClientRefused as refused:
            raise IdentityFailure(_refusal_error(refused, segment)) from refused

    def _redeem_code(
        self, client: Client, fields: Mapping[str, str]
    ) -> tuple[User, list[str], str | None]:
        value = fields.get("code", "")
        if not value:
            raise IdentityFailure(errors.missing_parameter("code"))
        code = self._state.codes.get(value)
        if code is None or code.client_id != client.client_id:
            raise IdentityFailure(errors.malformed_grant("code"))
        if code.redeemed:
            raise IdentityFailure(errors.CODE_REDEEMED)
        if code.expires_at < self._state.now():
            raise IdentityFailure(errors.CODE_EXPIRED)
        redirect_uri = fields.get("redirect_uri", "")
        if not redirect_uri:
            raise IdentityFailure(errors.missing_parameter("redirect_uri"))
        if redirect_uri != code.redirect_uri:
            raise IdentityFailure(errors.malformed_grant("redirect_uri"))
        if code.code_challenge is not None:
            verifier = fields.get("code_verifier", "")
            if not verifier or not verifier_matches(
                verifier, code.code_challenge, code.code_challenge_method
            ):
                raise IdentityFailure(errors.PKCE_MISMATCH)
        code.redeemed = True
        user = self._state.user_by_object_id(code.object_id)
        # What the authorization granted, narrowed to what this request asks for: a permission
        # the user did not grant is left out of the token (and its ``scope``), not an error.
        granted = scope_rules.canonical_set(code.scopes)
        requested = [
            scope
            for scope in self._requested(client, user, fields, code.scopes, check_consent=False)
            if scope_rules.canonical(scope) in granted
        ]
        return user, requested, code.nonce

    def _redeem_refresh_token(
        self, client: Client, fields: Mapping[str, str]
    ) -> tuple[User, list[str]]:
        value = fields.get("refresh_token", "")
        if not value:
            raise IdentityFailure(errors.missing_parameter("refresh_token"))
        token = self._state.refresh_tokens.get(value)
        if token is None:
            raise IdentityFailure(
                errors.invalid_grant(9002313, "Invalid request. Request is malformed or invalid.")
            )
        if token.client_id != client.client_id:
            raise IdentityFailure(errors.malformed_grant("refresh_token"))
        user = self._state.user_by_object_id(token.object_id)
        now = self._state.now()
        if token.session_generation < user.session_generation:
            raise IdentityFailure(errors.SESSIONS_REVOKED)
        if token.inactive or now - token.last_used_at > REFRESH_TOKEN_INACTIVITY:
            raise IdentityFailure(errors.REFRESH_INACTIVE)
        if user.interaction_required:
            raise IdentityFailure(errors.INTERACTION_REQUIRED)
        requested = self._requested(client, user, fields, token.scopes)
        token.last_used_at = now
        return user, requested

    def _requested(
        self,
        client: Client,
        user: User,
        fields: Mapping[str, str],
        grant: list[str],
        check_consent: bool = True,
    ) -> list[str]:
        """The scopes the request asks for (the whole ``grant`` if none), each known and (with
        ``check_consent``) the resource ones consented to."""
        requested = scope_rules.split(fields.get("scope", "")) or list(grant)
        for scope in requested:
            if not scope_rules.is_known(scope):
                raise IdentityFailure(errors.invalid_scope(scope))
        if not check_consent:
            return requested
        wanted = scope_rules.canonical_set(scope_rules.resource_scopes(requested))
        consented = self._state.consented_scopes(user.object_id, client.client_id)
        if not consented or not wanted <= consented:
            raise IdentityFailure(errors.consent_missing(client.client_id, client.name))
        return requested

    def _issue(
        self,
        request: web.Request,
        client: Client,
        user: User,
        issue: Issue,
        with_client_info: bool,
    ) -> dict[str, Any]:
        """Mint the tokens of ``issue`` (scopes in the client's own spelling)."""
        granted, nonce = issue.scopes, issue.nonce
        whole = scope_rules.canonical_set(issue.grant) | scope_rules.canonical_set(granted)
        now = int(self._state.now())
        lifetime = self._state.access_token_lifetime
        resource = scope_rules.resource_scopes(granted)
        short_names = [scope.rpartition("/")[2] for scope in resource]
        claims = {
            "aud": GRAPH_APPLICATION_ID,
            "iss": f"https://sts.windows.net/{user.tenant_id}/",
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "app_displayname": client.name,
            "appid": client.client_id,
            "idtyp": "user",
            "name": user.display_name,
            "oid": user.object_id,
            "scp": " ".join(
                short_names + [s for s in granted if s not in resource and s != "offline_access"]
            ),
            "sub": _pairwise_subject(user.object_id, GRAPH_APPLICATION_ID),
            "tid": user.tenant_id,
            "unique_name": user.address,
            "upn": user.address,
            "uti": base64url(uuid.uuid4().bytes),
            "ver": "1.0",
        }
        access = access_token(claims)
        self._state.access_tokens[access] = AccessToken(
            client.client_id, user.object_id, list(granted), self._state.now() + lifetime
        )
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": " ".join(granted),
            "expires_in": lifetime,
            "ext_expires_in": lifetime,
            "access_token": access,
        }
        if "offline_access" in whole:
            fresh = refresh_token()
            kept = list(dict.fromkeys([*issue.grant, *granted]))  # the grant is never narrowed
            self._state.refresh_tokens[fresh] = RefreshToken(
                client.client_id, user.object_id, kept, user.session_generation, now
            )
            body["refresh_token"] = fresh
        if "openid" in whole:
            body["id_token"] = self._id_token(request, client, user, whole, nonce, now)
        if with_client_info:
            body["client_info"] = client_info(user.object_id, user.tenant_id)
        return body

    def _id_token(
        self,
        request: web.Request,
        client: Client,
        user: User,
        canonical: frozenset[str],
        nonce: str | None,
        now: int,
    ) -> str:
        claims: dict[str, Any] = {
            "aud": client.client_id,
            "iss": f"{base_url(request)}/{user.tenant_id}/v2.0",
            "iat": now,
            "nbf": now,
            "exp": now + ID_TOKEN_LIFETIME,
            "oid": user.object_id,
            "sub": _pairwise_subject(user.object_id, client.client_id),
            "tid": user.tenant_id,
            "uti": base64url(uuid.uuid4().bytes),
            "ver": "2.0",
        }
        if "profile" in canonical:
            claims["name"] = user.display_name
            claims["preferred_username"] = user.user_principal_name or user.address
        if "email" in canonical:
            claims["email"] = user.address
        if nonce is not None:
            claims["nonce"] = nonce
        return self._signing_key.sign(claims)

    def _fault_answer(self, request: web.Request, fault: Fault) -> web.Response:
        """The body Entra sends for an overloaded or failing token endpoint."""
        if fault.status >= 500 and fault.status != 503:
            failure = IdentityError(
                "server_error",
                50000,
                "There was an error issuing a token or an issue with our sign-in service.",
                status=fault.status,
            )
        else:
            failure = IdentityError(
                "temporarily_unavailable",
                90033,
                "A transient error has occurred. Please try again.",
                status=fault.status,
            )
        response = errors.json_error(failure, request, self._state.clock.utcnow())
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        return response


def _refusal_error(refused: ClientRefused, segment: str) -> IdentityError:
    """Entra's words for a client the token endpoint does not accept."""
    if refused.reason is ClientRefusal.MISSING_CLIENT_ID:
        return errors.missing_parameter("client_id")
    if refused.reason is ClientRefusal.UNKNOWN_CLIENT:
        return errors.unknown_client(refused.client_id, segment)
    if refused.reason is ClientRefusal.WRONG_SECRET:
        return errors.invalid_secret(refused.client_id)
    return errors.missing_secret()  # no secret, or an undecodable HTTP Basic header


def _pairwise_subject(object_id: str, audience: str) -> str:
    """Entra's ``sub`` is pairwise: stable per (user, application), different across apps."""
    return base64url(hashlib.sha256(f"{object_id}:{audience}".encode()).digest())
