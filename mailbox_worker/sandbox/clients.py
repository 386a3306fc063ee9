"""A registered OAuth application, shared by the Microsoft and Google simulators."""

from __future__ import annotations

from dataclasses import dataclass
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
