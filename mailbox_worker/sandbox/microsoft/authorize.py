"""Microsoft identity platform v2.0: discovery, keys and the authorize (sign-in + consent) page.

Routes, path-routed like ``login.microsoftonline.com``:

* ``GET /{tenant}/v2.0/.well-known/openid-configuration`` — discovery; endpoints carry the tenant
  GUID for a named tenant, the literal segment for ``common``/``organizations``/``consumers``;
* ``GET /{tenant}/discovery/v2.0/keys`` — the JWKS that verifies id_tokens;
* ``GET|POST /{tenant}/oauth2/v2.0/authorize`` — validates the request (docs/providers.md A2),
  renders the consent page (``consent_page``), and on POST redirects to the client with ``code``
  or ``error``.

The token endpoint lives in ``token_endpoint``. Errors that cannot be redirected (unknown client,
unregistered redirect URI) are an HTML page with status 400, like Entra's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from ..clients import Client
from ..consent_page import read_consent_form
from ..signing import SigningKey
from . import identity_errors as errors
from . import scopes as scope_rules
from .consent_page import HIDDEN_FIELDS, render_consent_page, render_form_post
from .identity_errors import IdentityError, IdentityFailure
from .state import CODE_LIFETIME, AuthorizationCode, MicrosoftState, Tenant, User
from .token_values import authorization_code

MULTI_TENANT_SEGMENTS = frozenset({"common", "organizations", "consumers"})
RESPONSE_MODES = ("query", "fragment", "form_post")


def base_url(request: web.Request) -> str:
    """The sandbox's own https origin, as the client addressed it."""
    return f"{request.scheme}://{request.host}"


def resolve_tenant(state: MicrosoftState, segment: str) -> Tenant | None:
    """The tenant a path segment names; raises for an unknown one (AADSTS90002)."""
    if segment.lower() in MULTI_TENANT_SEGMENTS:
        return None
    tenant = state.find_tenant(segment)
    if tenant is None:
        raise IdentityFailure(
            IdentityError(
                "invalid_tenant",
                90002,
                f"Tenant '{segment}' not found. Check to make sure you have the correct tenant "
                "ID and are signing into the correct cloud.",
            )
        )
    return tenant


def user_in_tenant(state: MicrosoftState, segment: str, login: str) -> User | None:
    """The user signing in with ``login`` at the authority ``segment``, if allowed there."""
    user = state.find_user(login.strip())
    if user is None or segment.lower() == "consumers":
        return None
    tenant = state.find_tenant(segment)
    if tenant is not None and tenant.tenant_id != user.tenant_id:
        return None
    return user


@dataclass
class AuthorizeRequest:
    """A validated authorize request."""

    client: Client
    redirect_uri: str
    response_mode: str
    state: str | None
    scopes: list[str]
    fields: dict[str, str]


class IdentityEndpoints:
    """Handlers for discovery, keys and authorize."""

    def __init__(self, state: MicrosoftState, signing_key: SigningKey) -> None:
        self._state = state
        self._signing_key = signing_key

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.get("/{tenant}/v2.0/.well-known/openid-configuration", self.discovery),
            web.get("/{tenant}/discovery/v2.0/keys", self.keys),
            web.get("/{tenant}/oauth2/v2.0/authorize", self.authorize),
            web.post("/{tenant}/oauth2/v2.0/authorize", self.authorize),
        ]

    async def discovery(self, request: web.Request) -> web.Response:
        """The OpenID Connect discovery document msal reads."""
        segment = request.match_info["tenant"]
        try:
            tenant = resolve_tenant(self._state, segment)
        except IdentityFailure as failure:
            return errors.json_error(failure.error, request, self._state.clock.utcnow())
        path_tenant = tenant.tenant_id if tenant else segment
        issuer_tenant = tenant.tenant_id if tenant else "{tenantid}"
        origin = base_url(request)
        authority = f"{origin}/{path_tenant}"
        return web.json_response(
            {
                "token_endpoint": f"{authority}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
                "jwks_uri": f"{authority}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": f"{origin}/{issuer_tenant}/v2.0",
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
                "http_logout_supported": True,
                "frontchannel_logout_supported": True,
                "claims_supported": [
                    "sub",
                    "iss",
                    "aud",
                    "exp",
                    "iat",
                    "auth_time",
                    "acr",
                    "nonce",
                    "preferred_username",
                    "name",
                    "tid",
                    "ver",
                    "at_hash",
                    "c_hash",
                    "email",
                ],
                "tenant_region_scope": "EU",
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": request.host,
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        """The JWKS for id_token signatures."""
        return web.json_response(self._signing_key.jwks())

    async def authorize(self, request: web.Request) -> web.Response:
        """GET renders the consent page; POST (the form) answers the client."""
        segment = request.match_info["tenant"]
        fields: Mapping[str, str]
        if request.method == "POST":
            fields, granted = await read_consent_form(request)
        else:
            fields, granted = dict(request.query), []
            self._state.count("identity.authorize")
        try:
            resolve_tenant(self._state, segment)
            client = self._client_of(fields, segment)
        except IdentityFailure as unanswerable:
            return errors.html_error(unanswerable.error, self._state.clock.utcnow())
        redirect_uri = fields.get("redirect_uri", "")
        if not redirect_uri:
            return errors.html_error(
                errors.missing_parameter("redirect_uri"), self._state.clock.utcnow()
            )
        if not client.accepts_redirect(redirect_uri):
            return errors.html_error(
                errors.redirect_mismatch(redirect_uri, client.client_id),
                self._state.clock.utcnow(),
            )
        response_mode = fields.get("response_mode") or "query"
        failure = self._request_problem(fields)
        if response_mode not in RESPONSE_MODES:
            response_mode = "query"
            failure = IdentityError(
                "invalid_request", 900144, "The provided value for 'response_mode' is not valid."
            )
        request_state = fields.get("state")
        if failure is not None:
            return self._answer(
                redirect_uri, response_mode, self._error_parameters(failure), request_state
            )
        authorize = AuthorizeRequest(
            client,
            redirect_uri,
            response_mode,
            request_state,
            scope_rules.split(fields["scope"]),
            {name: fields[name] for name in HIDDEN_FIELDS if name in fields},
        )
        if request.method == "GET":
            return self._page(request, authorize, fields.get("login_hint", ""), None)
        return self._decide(request, segment, authorize, fields, granted)

    def _client_of(self, fields: Mapping[str, str], segment: str) -> Client:
        client_id = fields.get("client_id", "")
        if not client_id:
            raise IdentityFailure(errors.missing_parameter("client_id"))
        client = self._state.clients.get(client_id)
        if client is None:
            raise IdentityFailure(errors.unknown_client(client_id, segment))
        return client

    def _request_problem(self, fields: Mapping[str, str]) -> IdentityError | None:
        """What is wrong with a request whose client and redirect URI are fine, if anything."""
        response_type = fields.get("response_type", "")
        if not response_type:
            return errors.missing_parameter("response_type")
        if response_type != "code":
            return IdentityError(
                "unsupported_response_type",
                70005,
                f"response_type '{response_type}' is not enabled for the application.",
            )
        requested = scope_rules.split(fields.get("scope", ""))
        if not requested:
            return errors.missing_parameter("scope")
        for scope in requested:
            if not scope_rules.is_known(scope):
                return errors.invalid_scope(scope)
        challenge = fields.get("code_challenge")
        method = fields.get("code_challenge_method") or "plain"
        if challenge is not None and method not in ("S256", "plain"):
            # AADSTS number for an unsupported method is unconfirmed (docs/providers.md A5).
            return IdentityError(
                "invalid_request", 501491, f"Invalid code_challenge_method '{method}'."
            )
        if challenge is not None and not 43 <= len(challenge) <= 128:
            return IdentityError(
                "invalid_request", 501491, "Invalid size of Code_Challenge parameter."
            )
        if fields.get("prompt") == "none":
            # The sandbox keeps no browser session, so a silent request cannot succeed.
            return IdentityError(
                "login_required",
                50058,
                "A silent sign-in request was sent but no user is signed in.",
            )
        return None

    def _page(
        self, request: web.Request, authorize: AuthorizeRequest, login: str, error: str | None
    ) -> web.Response:
        page = render_consent_page(
            action_url=request.path,
            application_name=authorize.client.name,
            requested_scopes=authorize.scopes,
            request_fields=authorize.fields,
            login=login,
            error=error,
        )
        return web.Response(text=page, content_type="text/html")

    def _decide(
        self,
        request: web.Request,
        segment: str,
        authorize: AuthorizeRequest,
        fields: Mapping[str, str],
        granted: list[str],
    ) -> web.Response:
        if fields.get("action") == "cancel":
            self._state.count("identity.consent.cancel")
            return self._answer(
                authorize.redirect_uri,
                authorize.response_mode,
                self._error_parameters(errors.user_declined()),
                authorize.state,
            )
        login = fields.get("login", "")
        user = user_in_tenant(self._state, segment, login)
        if user is None:
            message = (
                "This username may be incorrect. Make sure you typed it correctly. "
                "Otherwise, contact your admin."
            )
            return self._page(request, authorize, login, message)
        requested = set(scope_rules.canonical_set(authorize.scopes))
        if self._state.needs_admin_approval(user, authorize.client.client_id, requested):
            # Entra shows "Need admin approval" after the sign-in; its "Return to the
            # application without granting consent" is taken at once here.
            self._state.count("identity.consent.admin_approval_required")
            return self._answer(
                authorize.redirect_uri,
                authorize.response_mode,
                self._error_parameters(errors.admin_approval_required(authorize.client.name)),
                authorize.state,
            )
        granted_scopes = [scope for scope in authorize.scopes if scope in set(granted)]
        self._state.count("identity.consent.accept")
        self._state.grant_consent(
            user.object_id,
            authorize.client.client_id,
            set(scope_rules.canonical_set(granted_scopes)),
        )
        code = authorization_code()
        challenge = fields.get("code_challenge")
        self._state.codes[code] = AuthorizationCode(
            client_id=authorize.client.client_id,
            object_id=user.object_id,
            redirect_uri=authorize.redirect_uri,
            scopes=granted_scopes,
            code_challenge=challenge,
            code_challenge_method=fields.get("code_challenge_method") or "plain",
            nonce=fields.get("nonce"),
            expires_at=self._state.now() + CODE_LIFETIME,
        )
        return self._answer(
            authorize.redirect_uri, authorize.response_mode, {"code": code}, authorize.state
        )

    @staticmethod
    def _error_parameters(failure: IdentityError) -> dict[str, str]:
        return {"error": failure.error, "error_description": failure.description}

    @staticmethod
    def _answer(
        redirect_uri: str, response_mode: str, parameters: dict[str, str], state: str | None
    ) -> web.Response:
        """Send the authorization response the way ``response_mode`` asks."""
        if state is not None:
            parameters = {**parameters, "state": state}
        if response_mode == "form_post":
            page = render_form_post(redirect_uri, parameters)
            return web.Response(text=page, content_type="text/html")
        separator = "#" if response_mode == "fragment" else ("&" if "?" in redirect_uri else "?")
        raise web.HTTPFound(f"{redirect_uri}{separator}{urlencode(parameters)}")
