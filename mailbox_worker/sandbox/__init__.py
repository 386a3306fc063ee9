"""A faithful local simulator of Microsoft identity (v2.0), Microsoft Graph mail and Google
OAuth 2.0, over HTTPS.

``Sandbox`` runs it inside an event loop (tests, demos); ``serve`` runs it until interrupted
(the ``mailbox-worker sandbox`` command). It shares no code with the daemon.

Layout: ``microsoft/`` and ``google/`` are the two simulators, independent of each other; the
top level holds what they share (``controls`` — counters, faults, timing; ``faults``;
``clients``; ``token_requests``; ``signing``; ``consent_page``; ``admin`` — the shared control
API) and what composes them (``state.SandboxState``, ``server``, ``ca``).
"""

from .server import Sandbox, serve

__all__ = ["Sandbox", "serve"]
