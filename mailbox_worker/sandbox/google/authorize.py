"""Google's authorization endpoint with its (granular) consent page, path-routed like
``accounts.google.com``: ``GET|POST /o/oauth2/v2/auth``.

GET validates the request (docs/providers.md C2) and renders the consent page; the form POSTs
back to the same path. The validated request is kept server-side under the hidden
``auth_request`` id (a browser driver may drop or alter hidden fields; without the id the posted
hidden fields are validated again). Accept → 302 to ``redirect_uri`` with ``code``, ``state``,
``scope`` (granted, space-separated; ``email``/``profile`` followed by their long forms as Google
does), ``authuser=0`` and ``prompt=consent``; cancel → ``error=access_denied`` (+ ``state``).

Errors: unknown client, missing or unregistered redirect URI → an HTML error page (400); every
other problem → redirect with ``error`` (+ ``error_description``, ``state``).
Counters: ``google.authorize`` (GET), ``google.consent.accept``, ``google.consent.cancel``.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import NoReturn
from urllib.parse import urlencode

from aiohttp import web

from ..clients import Client
from ..consent_page import read_consent_form
from ..controls import SandboxControls
from . import oauth_errors as errors
from . import scopes as scope_rules
from .consent_page import HIDDEN_FIELDS, render_consent_page
from .oauth_errors import GoogleError, GoogleFailure
from .state import GOOGLE_CODE_LIFETIME, GoogleCode, GoogleState, PendingAuthorization

AUTHORIZE_PATH = "/o/oauth2/v2/auth"


class GoogleAuthorizeEndpoint:
    """Handlers for ``/o/oauth2/v2/auth``."""

    def __init__(self, controls: SandboxControls, google: GoogleState) -> None:
        self._controls = controls
        self._google = google

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [web.get(AUTHORIZE_PATH, self.authorize), web.post(AUTHORIZE_PATH, self.authorize)]

    async def authorize(self, request: web.Request) -> web.Response:
        """GET renders the consent page; POST (the form) answers the client."""
        granted: list[str] = []
        if request.method == "POST":
            posted, granted = await read_consent_form(request)
            pending = self._google.pending.get(posted.get("auth_request", ""))
            if pending is not None and pending.expires_at >= self._controls.now():
                return self._decide(pending, posted, granted)
            fields: Mapping[str, str] = posted
        else:
            fields = dict(request.query)
            self._controls.count("google.authorize")
        try:
            validated = self._validate(fields)
        except GoogleFailure as unanswerable:
            status = 401 if unanswerable.error.error == "invalid_client" else 400
            return errors.html_error(unanswerable.error, status)
        if request.method == "POST":
            return self._decide(validated, fields, granted)
        request_id = secrets.token_urlsafe(24)
        validated.fields["auth_request"] = request_id
        self._prune()
        self._google.pending[request_id] = validated
        return self._page(validated, fields.get("login_hint", ""), None)

    def _validate(self, fields: Mapping[str, str]) -> PendingAuthorization:
        """The validated request; raises the error redirect, or ``GoogleFailure`` when the
        error cannot be redirected."""
        client_id = fields.get("client_id", "")
        if not client_id:
            raise GoogleFailure(errors.missing_parameter("client_id"))
        client = self._google.clients.get(client_id)
        if client is None:
            raise GoogleFailure(errors.UNKNOWN_CLIENT)
        redirect_uri = fields.get("redirect_uri", "")
        if not redirect_uri:
            raise GoogleFailure(errors.missing_parameter("redirect_uri"))
        if not client.accepts_redirect(redirect_uri):
            raise GoogleFailure(
                GoogleError(
                    "redirect_uri_mismatch",
                    f"You can't sign in to this app because it doesn't comply with Google's "
                    f"OAuth 2.0 policy. Request details: redirect_uri={redirect_uri}",
                )
            )
        problem = _request_problem(fields)
        if problem is not None:
            parameters = {"error": problem.error, "error_description": problem.description}
            _redirect(redirect_uri, parameters, fields.get("state"))
        return PendingAuthorization(
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            scopes=scope_rules.split(fields["scope"]),
            fields={name: fields[name] for name in HIDDEN_FIELDS if name in fields},
            expires_at=self._controls.now() + GOOGLE_CODE_LIFETIME,
        )

    def _prune(self) -> None:
        now = self._controls.now()
        for key in [key for key, item in self._google.pending.items() if item.expires_at < now]:
            del self._google.pending[key]

    def _client(self, pending: PendingAuthorization) -> Client:
        return self._google.clients[pending.client_id]

    def _page(self, pending: PendingAuthorization, login: str, error: str | None) -> web.Response:
        page = render_consent_page(
            action_url=AUTHORIZE_PATH,
            application_name=self._client(pending).name,
            sign_in_scopes=[s for s in pending.scopes if scope_rules.is_sign_in(s)],
            optional_scopes=[s for s in pending.scopes if not scope_rules.is_sign_in(s)],
            request_fields=pending.fields,
            login=login,
            error=error,
        )
        return web.Response(text=page, content_type="text/html")

    def _decide(
        self,
        pending: PendingAuthorization,
        posted: Mapping[str, str],
        ticked: list[str],
    ) -> web.Response:
        fields = pending.fields
        if posted.get("action") == "cancel":
            self._controls.count("google.consent.cancel")
            self._google.pending.pop(fields.get("auth_request", ""), None)
            return _redirect(pending.redirect_uri, {"error": "access_denied"}, fields.get("state"))
        login = posted.get("login", "")
        user = self._google.find_user(login)
        if user is None:
            return self._page(pending, login, "Couldn't find your Google Account")
        self._controls.count("google.consent.accept")
        self._google.pending.pop(fields.get("auth_request", ""), None)
        granted = [
            scope
            for scope in pending.scopes
            if scope_rules.is_sign_in(scope) or scope in set(ticked)
        ]
        canonical = scope_rules.canonical_list(granted)
        grant, new_grant = self._google.consent(user.address, pending.client_id, canonical)
        if fields.get("include_granted_scopes") == "true":
            canonical = list(dict.fromkeys(canonical + grant.scopes))
        live_tokens = self._google.live_refresh_tokens(user.address, pending.client_id)
        offline = fields.get("access_type") == "offline"
        forced = "consent" in fields.get("prompt", "").split()
        code = "4/0A" + secrets.token_urlsafe(64)
        self._google.codes[code] = GoogleCode(
            client_id=pending.client_id,
            user=user.address.lower(),
            grant_id=grant.id,
            redirect_uri=pending.redirect_uri,
            scopes=canonical,
            code_challenge=fields.get("code_challenge"),
            code_challenge_method=fields.get("code_challenge_method") or "plain",
            issue_refresh_token=offline and (new_grant or forced or not live_tokens),
            expires_at=self._controls.now() + GOOGLE_CODE_LIFETIME,
        )
        parameters = {
            "code": code,
            "scope": " ".join(scope_rules.callback_list(granted)),
            "authuser": "0",
            "prompt": "consent",
        }
        return _redirect(pending.redirect_uri, parameters, fields.get("state"))


def _request_problem(fields: Mapping[str, str]) -> GoogleError | None:
    """What is wrong with a request whose client and redirect URI are fine, if anything."""
    response_type = fields.get("response_type", "")
    if not response_type:
        return errors.missing_parameter("response_type")
    if response_type != "code":
        return GoogleError("unsupported_response_type", f"Invalid response_type: {response_type}")
    requested = scope_rules.split(fields.get("scope", ""))
    if not requested:
        return errors.missing_parameter("scope")
    unknown = [scope for scope in requested if not scope_rules.is_known(scope)]
    if unknown:
        return errors.invalid_scopes(unknown)
    access_type = fields.get("access_type", "online")
    if access_type not in ("online", "offline"):
        return GoogleError("invalid_request", f"Invalid access_type: {access_type}")
    challenge = fields.get("code_challenge")
    method = fields.get("code_challenge_method") or "plain"
    if challenge is not None and method not in ("S256", "plain"):
        return GoogleError("invalid_request", f"Invalid code_challenge_method: {method}")
    if challenge is not None and not 43 <= len(challenge) <= 128:
        return GoogleError("invalid_request", "Invalid code_challenge length.")
    prompts = fields.get("prompt", "").split()
    if "none" in prompts and len(prompts) > 1:
        return GoogleError("invalid_request", "Invalid prompt: none must be used alone.")
    if "none" in prompts:
        # The sandbox keeps no browser session, so a silent request cannot succeed.
        return GoogleError("login_required", "Login required.")
    return None


def _redirect(redirect_uri: str, parameters: dict[str, str], state: str | None) -> NoReturn:
    """The 302 back to the client, ``state`` first as Google orders it."""
    if state is not None:
        parameters = {"state": state, **parameters}
    separator = "&" if "?" in redirect_uri else "?"
    raise web.HTTPFound(f"{redirect_uri}{separator}{urlencode(parameters)}")
