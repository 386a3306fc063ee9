"""A faithful local simulator of Microsoft identity (v2.0), Microsoft Graph mail and Google
OAuth 2.0, over HTTPS.

``Sandbox`` runs it inside an event loop (tests, demos); ``serve`` runs it until interrupted
(the ``mailbox-worker sandbox`` command). It shares no code with the daemon.
"""

from .server import Sandbox, serve

__all__ = ["Sandbox", "serve"]
