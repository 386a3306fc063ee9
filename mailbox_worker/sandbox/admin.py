"""The sandbox's shared control API, JSON under ``/_sandbox/``, and the helpers both providers'
control APIs use.

* ``GET /_sandbox/counters`` — calls per operation;
* ``POST /_sandbox/faults`` / ``DELETE /_sandbox/faults`` — queue / clear faults;
* ``POST /_sandbox/chaos`` — ``{rates: {kind: probability}, seed?, duration?, operations?,
  retry_after?, error_status?, slow_delay?, hang_limit?, latency?}``: random faults
  (``controls.Chaos``); ``GET /_sandbox/chaos`` — what was injected, by kind, by ``Message-ID``
  and by ``client-request-id``;
  ``DELETE /_sandbox/chaos`` — stop injecting (the record stays);
* ``POST /_sandbox/settings`` — ``{access_token_lifetime?, throttle_retry_after?, graph_latency?,
  latency?, latency_seed?}``: ``latency`` replaces the latency rules, ``{operation: ms or
  {distribution, ...}}`` (module ``latency``); ``GET /_sandbox/settings`` — the settings;
* ``POST /_sandbox/reset`` — forget messages, counters and faults.

Microsoft's directory and mailboxes are controlled through ``microsoft.admin``, Google's accounts
and grants through ``google.admin`` (``/_sandbox/google/…``). Every operation is a thin wrapper
over a ``SandboxControls`` method, which tests may call directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .clients import Client
from .controls import DEFAULT_CHAOS_OPERATIONS, SandboxControls


def problem_response(status: int, message: str) -> web.Response:
    """A control-API error: ``{"error": message}`` with ``status``."""
    return web.json_response({"error": message}, status=status)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 answer."""
    try:
        document = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        ) from problem
    if not isinstance(document, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body must be a JSON object"}),
            content_type="application/json",
        )
    return document


async def register_client(
    request: web.Request,
    register: Callable[[str, str | None, list[str], str | None], Client],
) -> web.Response:
    """``POST .../clients`` for either provider: validate, ``register``, answer 201."""
    document = await json_object(request)
    client_id, redirect_uris = document.get("client_id"), document.get("redirect_uris", [])
    secret, name = document.get("client_secret"), document.get("name")
    if not isinstance(client_id, str) or not client_id:
        return problem_response(400, "client_id is required")
    uris_ok = isinstance(redirect_uris, list) and all(isinstance(uri, str) for uri in redirect_uris)
    if not uris_ok:
        return problem_response(400, "redirect_uris must be a list of strings")
    if not (secret is None or isinstance(secret, str)) or not (
        name is None or isinstance(name, str)
    ):
        return problem_response(400, "client_secret and name must be strings")
    client = register(client_id, secret, redirect_uris, name)
    return web.json_response(
        {"client_id": client.client_id, "redirect_uris": client.redirect_uris, "name": client.name},
        status=201,
    )


class ControlEndpoints:
    """Handlers for the shared part of ``/_sandbox/``."""

    def __init__(self, controls: SandboxControls) -> None:
        self._controls = controls

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        return [
            web.get("/_sandbox/counters", self.counters),
            web.post("/_sandbox/faults", self.queue_fault),
            web.delete("/_sandbox/faults", self.clear_faults),
            web.post("/_sandbox/chaos", self.start_chaos),
            web.get("/_sandbox/chaos", self.chaos_report),
            web.delete("/_sandbox/chaos", self.stop_chaos),
            web.post("/_sandbox/settings", self.settings),
            web.get("/_sandbox/settings", self.settings_report),
            web.post("/_sandbox/reset", self.reset),
        ]

    async def counters(self, request: web.Request) -> web.Response:
        """Calls per operation."""
        return web.json_response({"counters": self._controls.counters()})

    async def queue_fault(self, request: web.Request) -> web.Response:
        """Queue a fault for an operation."""
        document = await json_object(request)
        try:
            retry_after = document.get("retry_after")
            fault = self._controls.queue_fault(
                operation=str(document["operation"]),
                kind=str(document["kind"]),
                status=int(document.get("status", 503)),
                retry_after=None if retry_after is None else int(retry_after),
                delay=float(document.get("delay", 0.0)),
                times=int(document.get("times", 1)),
            )
        except (KeyError, TypeError, ValueError) as problem:
            return problem_response(400, f"invalid fault: {problem}")
        return web.json_response(
            {
                "operation": fault.operation,
                "kind": fault.kind,
                "status": fault.status,
                "retry_after": fault.retry_after,
                "delay": fault.delay,
                "times": fault.times,
            },
            status=201,
        )

    async def clear_faults(self, request: web.Request) -> web.Response:
        """Forget all queued faults."""
        self._controls.clear_faults()
        return web.json_response({"faults": []})

    async def start_chaos(self, request: web.Request) -> web.Response:
        """Start injecting random faults (replacing running chaos and its record); 201."""
        document = await json_object(request)
        try:
            rates = document["rates"]
            if not isinstance(rates, dict):
                raise TypeError("rates must be an object")
            duration = document.get("duration")
            operations = document.get("operations")
            if operations is not None and not (
                isinstance(operations, list) and all(isinstance(each, str) for each in operations)
            ):
                raise TypeError("operations must be a list of strings")
            self._controls.start_chaos(
                {str(kind): float(rate) for kind, rate in rates.items()},
                seed=int(document.get("seed", 0)),
                duration=None if duration is None else float(duration),
                operations=DEFAULT_CHAOS_OPERATIONS if operations is None else tuple(operations),
                retry_after=int(document.get("retry_after", 1)),
                error_status=int(document.get("error_status", 500)),
                slow_delay=float(document.get("slow_delay", 0.5)),
                hang_limit=float(document.get("hang_limit", 30.0)),
                latency=float(document.get("latency", 0.0)),
            )
        except (KeyError, TypeError, ValueError) as problem:
            return problem_response(400, f"invalid chaos: {problem}")
        return web.json_response(self._controls.chaos_report(), status=201)

    async def chaos_report(self, request: web.Request) -> web.Response:
        """Whether chaos runs, and the faults injected by kind and by ``Message-ID``."""
        return web.json_response(self._controls.chaos_report())

    async def stop_chaos(self, request: web.Request) -> web.Response:
        """Stop injecting random faults; answer the record."""
        self._controls.stop_chaos()
        return web.json_response(self._controls.chaos_report())

    async def settings(self, request: web.Request) -> web.Response:
        """Change the access-token lifetime, the Retry-After of throttled answers, the time
        each Graph request takes (``graph_latency``, seconds) or the latency rules."""
        document = await json_object(request)
        if "latency" in document or "latency_seed" in document:
            rules = document.get("latency", {})
            seed = document.get("latency_seed", 0)
            try:
                if not isinstance(rules, dict) or type(seed) is not int:
                    raise ValueError("latency must be an object and latency_seed an integer")
                self._controls.set_latency(rules, seed)
            except ValueError as problem:
                return problem_response(400, f"invalid latency: {problem}")
        try:
            if "access_token_lifetime" in document:
                self._controls.access_token_lifetime = max(
                    1, int(document["access_token_lifetime"])
                )
            if "throttle_retry_after" in document:
                self._controls.throttle_retry_after = max(0, int(document["throttle_retry_after"]))
            if "graph_latency" in document:
                self._controls.graph_latency = max(0.0, float(document["graph_latency"]))
        except (TypeError, ValueError):
            return problem_response(400, "settings must be numbers")
        return await self.settings_report(request)

    async def settings_report(self, request: web.Request) -> web.Response:
        """The settings in force."""
        return web.json_response(
            {
                "access_token_lifetime": self._controls.access_token_lifetime,
                "throttle_retry_after": self._controls.throttle_retry_after,
                "graph_latency": self._controls.graph_latency,
                "latency": self._controls.latency_report(),
                "latency_seed": self._controls.latency_seed,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        """Forget messages, counters and faults."""
        self._controls.reset()
        return web.json_response({"reset": True})
