"""Registered OAuth applications, shared by the Microsoft and Google simulators."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar
from urllib.parse import urlsplit

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass
class Client:
    """A registered OAuth application. ``client_secret`` None means a public client."""

    client_id: str
    client_secret: str | None
    redirect_uris: list[str]
    name: str
    # Sandbox convenience, default clients only: any http loopback redirect URI is accepted.
    # Entra requires an exact match with a registered URI (it only ignores the port of
    # http://localhost for public clients); admin-registered clients get exact matching.
    accepts_any_loopback_redirect: bool = False

    def accepts_redirect(self, uri: str) -> bool:
        """True when ``uri`` may receive this client's authorization responses."""
        if uri in self.redirect_uris:
            return True
        if not self.accepts_any_loopback_redirect:
            return False
        parts = urlsplit(uri)
        return parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS


class ClientRegistry:
    """The applications one simulated provider knows: a base for that provider's state.

    A subclass provides ``clients`` (by client id) and names its zero-setup client in
    ``default_client_id``.
    """

    default_client_id: ClassVar[str]
    clients: dict[str, Client]

    def register_client(
        self,
        client_id: str,
        client_secret: str | None,
        redirect_uris: list[str],
        name: str | None = None,
    ) -> Client:
        """Register (or replace) an application; its redirect URIs must then match exactly
        (the default client's: also any http loopback URI)."""
        client = Client(client_id, client_secret, list(redirect_uris), name or client_id)
        client.accepts_any_loopback_redirect = client_id == self.default_client_id
        self.clients[client_id] = client
        return client
