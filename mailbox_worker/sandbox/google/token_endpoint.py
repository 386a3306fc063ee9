"""Google's token and revoke endpoints (``oauth2.googleapis.com``), plus its discovery and keys.

Routes:

* ``POST /token`` — ``authorization_code`` (client secret in the form or HTTP Basic; single-use
  code; ``redirect_uri`` must match; PKCE ``code_verifier`` checked) and ``refresh_token`` (an
  optional ``scope`` must be a subset of the grant; usually no new refresh token). Answers as
  docs/providers.md C3: ``access_token`` (``ya29.…``), ``expires_in`` (3599), ``refresh_token``
  (``1//0…``; only with ``access_type=offline``, on first consent or with ``prompt=consent``),
  ``scope`` (canonical: ``…/userinfo.email`` for ``email``), ``token_type``, ``id_token`` (RS256,
  ``iss`` ``https://accounts.google.com``; only with ``openid``, which ``email``/``profile`` imply);
* ``POST /revoke`` — form or query ``token``; 200 ``{}``; kills the token's whole grant; unknown or
  dead token → 400 ``invalid_token``; ``GET /revoke`` → 404;
* ``GET /.well-known/openid-configuration`` and ``GET /oauth2/v3/certs`` — discovery and JWKS.

Counters: ``google.token``, ``google.token.<grant_type>``, ``google.revoke``. Faults: operations
``google.token.<grant_type>`` / ``google.token`` and ``google.revoke``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aiohttp import web

from ..clients import Client
from ..controls import Fault, SandboxControls
from ..faults import with_fault
from ..signing import SigningKey
from ..token_requests import (
    ClientRefusal,
    ClientRefused,
    authenticate_client,
    read_token_form,
    verifier_matches,
)
from . import oauth_errors as errors
from . import scopes as scope_rules
from .oauth_errors import NO_STORE, GoogleError, GoogleFailure, json_error
from .state import GoogleGrant, GoogleState, GoogleUser

GOOGLE_ISSUER = "https://accounts.google.com"
ID_TOKEN_LIFETIME = 3600


class GoogleTokenEndpoints:
    """Handlers for token, revoke, discovery and keys."""

    def __init__(
        self, controls: SandboxControls, google: GoogleState, signing_key: SigningKey
    ) -> None:
        self._controls = controls
        self._google = google
        self._signing_key = signing_key

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.post("/token", self.token),
            web.post("/revoke", self.revoke),
            web.get("/revoke", self.revoke_get),
            web.get("/.well-known/openid-configuration", self.discovery),
            web.get("/oauth2/v3/certs", self.keys),
        ]

    # -- token -----------------------------------------------------------------------------

    async def token(self, request: web.Request) -> web.StreamResponse:
        """Redeem a code or a refresh token."""
        fields, grant_type = await read_token_form(request, self._controls, "google.token")

        async def process() -> web.StreamResponse:
            try:
                return self._grant(request, grant_type, fields)
            except GoogleFailure as failure:
                return json_error(failure.error)

        return await with_fault(
            request,
            self._controls,
            (f"google.token.{grant_type}", "google.token"),
            process,
            _fault_answer,
        )

    def _grant(self, request: web.Request, grant_type: str, fields: dict[str, str]) -> web.Response:
        if grant_type not in ("authorization_code", "refresh_token"):
            raise GoogleFailure(errors.unsupported_grant_type(grant_type))
        client = self._authenticate(request, fields)
        if grant_type == "authorization_code":
            grant, scopes, with_refresh = self._redeem_code(client, fields)
        else:
            grant, scopes = self._redeem_refresh_token(client, fields)
            with_refresh = False
        body = self._issue(client, grant, scopes, with_refresh)
        return web.json_response(body, headers=NO_STORE)

    def _authenticate(self, request: web.Request, fields: Mapping[str, str]) -> Client:
        """The calling client; secret from the form or HTTP Basic (client_secret_basic)."""
        try:
            return authenticate_client(request, fields, self._google.clients)
        except ClientRefused as refused:
            raise GoogleFailure(_refusal_error(refused)) from refused

    def _redeem_code(
        self, client: Client, fields: Mapping[str, str]
    ) -> tuple[GoogleGrant, list[str], bool]:
        value = fields.get("code", "")
        if not value:
            raise GoogleFailure(errors.missing_parameter("code"))
        code = self._google.codes.get(value)
        if code is None:
            raise GoogleFailure(errors.MALFORMED_CODE)
        if (
            code.client_id != client.client_id
            or code.redeemed
            or code.expires_at < self._controls.now()
        ):
            raise GoogleFailure(errors.BAD_CODE)
        redirect_uri = fields.get("redirect_uri", "")
        if not redirect_uri:
            raise GoogleFailure(errors.missing_parameter("redirect_uri"))
        if redirect_uri != code.redirect_uri:
            raise GoogleFailure(errors.REDIRECT_MISMATCH)
        if code.code_challenge is not None:
            verifier = fields.get("code_verifier", "")
            if not verifier:
                raise GoogleFailure(errors.MISSING_VERIFIER)
            if not verifier_matches(verifier, code.code_challenge, code.code_challenge_method):
                raise GoogleFailure(errors.BAD_VERIFIER)
        code.redeemed = True
        grant = self._google.grants[code.grant_id]
        if grant.revoked:
            raise GoogleFailure(errors.DEAD_TOKEN)
        return grant, list(code.scopes), code.issue_refresh_token

    def _redeem_refresh_token(
        self, client: Client, fields: Mapping[str, str]
    ) -> tuple[GoogleGrant, list[str]]:
        value = fields.get("refresh_token", "")
        if not value:
            raise GoogleFailure(errors.missing_parameter("refresh_token"))
        token = self._google.refresh_tokens.get(value)
        if token is None:
            raise GoogleFailure(errors.BAD_CODE)
        if token.client_id != client.client_id:
            raise GoogleFailure(errors.FOREIGN_TOKEN)
        if self._google.refresh_token_problem(token) is not None:
            raise GoogleFailure(errors.DEAD_TOKEN)
        requested = scope_rules.canonical_list(scope_rules.split(fields.get("scope", "")))
        if requested:
            beyond = [scope for scope in requested if scope not in token.scopes]
            if beyond:
                raise GoogleFailure(errors.invalid_scopes(beyond))
        token.last_used_at = self._controls.now()
        return self._google.grants[token.grant_id], requested or list(token.scopes)

    def _issue(
        self, client: Client, grant: GoogleGrant, scopes: list[str], with_refresh: bool
    ) -> dict[str, Any]:
        lifetime = self._controls.access_token_lifetime
        body: dict[str, Any] = {
            "access_token": self._google.issue_access_token(grant, scopes, lifetime),
            "expires_in": lifetime,
        }
        if with_refresh:
            body["refresh_token"] = self._google.issue_refresh_token(grant, scopes)
        body["scope"] = " ".join(scopes)
        body["token_type"] = "Bearer"
        user = self._google.find_user(grant.user)
        if "openid" in scopes and user is not None:
            body["id_token"] = self._id_token(client, user, scopes)
        return body

    def _id_token(self, client: Client, user: GoogleUser, scopes: list[str]) -> str:
        now = int(self._controls.now())
        claims: dict[str, Any] = {
            "iss": GOOGLE_ISSUER,
            "azp": client.client_id,
            "aud": client.client_id,
            "sub": user.subject,
            "iat": now,
            "exp": now + ID_TOKEN_LIFETIME,
        }
        if scope_rules.USERINFO_EMAIL in scopes:
            claims["email"] = user.address
            claims["email_verified"] = True
        if scope_rules.USERINFO_PROFILE in scopes:
            claims["name"] = user.display_name
        return self._signing_key.sign(claims)

    # -- revoke ----------------------------------------------------------------------------

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """Revoke the grant of an access or refresh token."""
        form = await request.post()
        posted = form.get("token")
        value = posted if isinstance(posted, str) else request.query.get("token", "")
        self._controls.count("google.revoke")

        async def process() -> web.StreamResponse:
            if not value:
                return json_error(errors.missing_parameter("token"))
            grant = self._google.grant_of_token(value)
            record = self._google.refresh_tokens.get(value)
            dead = record is not None and self._google.refresh_token_problem(record) is not None
            if grant is None or grant.revoked or dead:
                return json_error(errors.REVOKE_UNKNOWN)
            self._google.revoke_grant(grant, "client_revoked")
            return web.json_response({}, headers=NO_STORE)

        return await with_fault(request, self._controls, ("google.revoke",), process, _fault_answer)

    async def revoke_get(self, request: web.Request) -> web.Response:
        """The revoke URL takes POST only; GET is Google's plain 404 page."""
        page = "<!DOCTYPE html><html><title>Error 404 (Not Found)</title><p>404. That's an error."
        return web.Response(status=404, text=page, content_type="text/html")

    # -- discovery -------------------------------------------------------------------------

    async def discovery(self, request: web.Request) -> web.Response:
        """A subset of Google's OpenID configuration, pointing at this sandbox."""
        origin = f"{request.scheme}://{request.host}"
        return web.json_response(
            {
                "issuer": GOOGLE_ISSUER,
                "authorization_endpoint": f"{origin}/o/oauth2/v2/auth",
                "token_endpoint": f"{origin}/token",
                "revocation_endpoint": f"{origin}/revoke",
                "jwks_uri": f"{origin}/oauth2/v3/certs",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "email", "profile"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "client_secret_basic",
                ],
                "code_challenge_methods_supported": ["plain", "S256"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        """The JWKS that verifies Google id_tokens from this sandbox."""
        return web.json_response(self._signing_key.jwks())


def _fault_answer(fault: Fault) -> web.Response:
    response = json_error(errors.fault_error(fault.status))
    if fault.retry_after is not None:
        response.headers["Retry-After"] = str(fault.retry_after)
    return response


def _refusal_error(refused: ClientRefused) -> GoogleError:
    """Google's words for a client the token endpoint does not accept."""
    if refused.reason is ClientRefusal.MISSING_CLIENT_ID:
        return errors.missing_parameter("client_id")
    if refused.reason is ClientRefusal.UNKNOWN_CLIENT:
        return errors.UNKNOWN_CLIENT
    if refused.reason is ClientRefusal.MISSING_SECRET:
        return errors.MISSING_SECRET
    return errors.BAD_SECRET  # a wrong secret, or an undecodable HTTP Basic header
