"""The HTTP API: authenticate, validate against ``openapi.json``, call the ports, render.

Read top-down: ``app`` (routes and middlewares) → ``jobs`` / ``mailboxes`` / ``system``
(handlers) → ``auth``, ``parsing`` and ``document`` (who calls, what they sent) →
``representations`` (what we answer) → ``errors`` and ``http_metrics`` (middlewares).
``services`` holds the ports the rest of the daemon implements.
"""
