"""The sandbox's Google control API, JSON under ``/_sandbox/google/``.

* ``GET /_sandbox/google/grants`` — ``{"grants": [{id, client_id, user, scopes, revoked,
  revoked_reason, created_at, live_refresh_tokens}]}``, oldest first;
* ``POST /_sandbox/google/clients`` — ``{client_id, client_secret, redirect_uris, name}``;
* ``POST /_sandbox/google/users`` — ``{address, display_name?, sub?}``: a new account (one
  that replaces the address's account gets a new ``sub``, and the old account's grants die);
* ``POST /_sandbox/google/users/{address}/scenario`` — ``{"scenario": ...}``
  (``state.GOOGLE_SCENARIOS``);
* ``POST /_sandbox/google/settings`` — ``{refresh_token_cap?}``.

Counters and faults use the shared ``/_sandbox/counters`` and ``/_sandbox/faults``
(``sandbox.admin``). Every operation wraps a ``GoogleState`` method (``SandboxState.google``),
which tests may call directly.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..admin import json_object, problem_response, register_client
from .state import GOOGLE_SCENARIOS, GoogleGrant, GoogleState, UnknownGoogleUserError, iso_time


def grant_summary(google: GoogleState, grant: GoogleGrant) -> dict[str, Any]:
    """The control API's view of one grant."""
    return {
        "id": grant.id,
        "client_id": grant.client_id,
        "user": grant.user,
        "scopes": list(grant.scopes),
        "revoked": grant.revoked,
        "revoked_reason": grant.revoked_reason,
        "created_at": iso_time(grant.created_at),
        "live_refresh_tokens": len(
            [
                token
                for token in google.refresh_tokens.values()
                if token.grant_id == grant.id and google.refresh_token_problem(token) is None
            ]
        ),
    }


class GoogleAdminEndpoints:
    """Handlers for ``/_sandbox/google/``."""

    def __init__(self, google: GoogleState) -> None:
        self._google = google

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.get("/_sandbox/google/grants", self.grants),
            web.post("/_sandbox/google/clients", self.register_client),
            web.post("/_sandbox/google/users", self.add_user),
            web.post("/_sandbox/google/users/{address}/scenario", self.scenario),
            web.post("/_sandbox/google/settings", self.settings),
        ]

    async def grants(self, request: web.Request) -> web.Response:
        """Every grant, revoked ones included."""
        listing = [grant_summary(self._google, grant) for grant in self._google.grant_list()]
        return web.json_response({"grants": listing})

    async def register_client(self, request: web.Request) -> web.Response:
        """Register (or replace) a Google OAuth client; redirect URIs then match exactly."""
        return await register_client(request, self._google.register_client)

    async def add_user(self, request: web.Request) -> web.Response:
        """Add a Google Account, or replace the one holding the address by a new account."""
        document = await json_object(request)
        address, display_name = document.get("address"), document.get("display_name")
        subject = document.get("sub")
        if not isinstance(address, str) or "@" not in address:
            return problem_response(400, "address is required")
        if not (display_name is None or isinstance(display_name, str)):
            return problem_response(400, "display_name must be a string")
        if not (subject is None or (isinstance(subject, str) and subject)):
            return problem_response(400, "sub must be a non-empty string")
        user = self._google.add_user(address, display_name, subject)
        return web.json_response(
            {"address": user.address, "display_name": user.display_name, "sub": user.subject},
            status=201,
        )

    async def scenario(self, request: web.Request) -> web.Response:
        """Flip a per-user scenario switch (docs/providers.md C4)."""
        document = await json_object(request)
        scenario = document.get("scenario")
        if scenario not in GOOGLE_SCENARIOS:
            return problem_response(400, f"scenario must be one of {', '.join(GOOGLE_SCENARIOS)}")
        try:
            self._google.apply_scenario(request.match_info["address"], str(scenario))
        except UnknownGoogleUserError:
            return problem_response(404, "no such user")
        return web.json_response({"address": request.match_info["address"], "scenario": scenario})

    async def settings(self, request: web.Request) -> web.Response:
        """Change the live refresh-token cap per (user, client)."""
        document = await json_object(request)
        if "refresh_token_cap" in document:
            cap = document["refresh_token_cap"]
            if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
                return problem_response(400, "refresh_token_cap must be a positive integer")
            self._google.refresh_token_cap = cap
        return web.json_response({"refresh_token_cap": self._google.refresh_token_cap})
