"""Where the daemon may send a request at all: the egress allow-list (docs/privacy.md PP-5).

PP-5 allows no outbound call but to the providers' APIs and the invoicing app's callback URL
(attachments are never fetched by URL). The composition root builds one ``EgressPolicy`` from
the settings that name those endpoints, and every HTTP client the daemon creates asks
``allows`` before a request — or a redirect — leaves (``providers/egress_gate.py``). This is
the coarse layer, by origin only; Google's finer allow-list of operations
(``google_operations.py``) stays below it.

An origin is ``scheme://host[:port]``: the scheme and host in lower case, the default port
(443 for https, 80 for http) left out. Only https is allowed, except http on the loopback
hosts (the sandbox and the tests). Pure: data and predicates, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from mailbox_worker.policy.domains import ascii_domain

DEFAULT_PORTS: Final = {"https": 443, "http": 80}
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})

GRAPH_UPLOAD_ORIGINS: Final[Mapping[str, tuple[str, ...]]] = {
    "https://graph.microsoft.com": ("https://outlook.office.com",),
}
"""Where Microsoft Graph sends the bytes of a large attachment: the ``uploadUrl`` of an upload
session is on another host than Graph's (docs/providers.md B2). Keyed by the Graph origin; a
Graph origin not listed (the sandbox) uploads to itself."""


def origin(url: str) -> str:
    """The normalised origin of the http(s) URL ``url``; ``ValueError`` saying why it has none.

    Refuses http except on a loopback host, so an origin returned is one a policy may list.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError("is not a URL with a valid host and port") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("must be an https URL")
    host = parts.hostname  # lower-cased, without brackets or credentials
    if not host:
        raise ValueError("has no host")
    try:
        host = ascii_domain(host)  # as aiohttp's URLs (yarl) spell it
    except UnicodeError:
        raise ValueError("has a host that is not a valid internationalised name") from None
    if ":" in host:
        host = f"[{host}]"
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise ValueError("must use https (http only for localhost, 127.0.0.1 and [::1])")
    shown_port = "" if port is None or port == DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def described(url: str) -> str:
    """What a log line or an audit event may say about a destination: its origin only (no
    path, query or credentials, which may carry a token or a person's address)."""
    try:
        return origin(url)
    except ValueError:
        scheme = url.partition(":")[0].lower()
        return f"{scheme[:10]}://(unreadable host)" if scheme.isalnum() else "(not a URL)"


@dataclass(frozen=True, slots=True)
class EgressPolicy:
    """The origins requests may go to; ``allows`` is the one rule every client obeys."""

    origins: frozenset[str]

    @classmethod
    def for_endpoints(cls, endpoints: Iterable[str]) -> EgressPolicy:
        """The policy allowing the origins of ``endpoints`` (URLs, paths and queries ignored).

        ``ValueError`` (from ``origin``) when one is not an https URL (http: loopback only).
        """
        return cls(frozenset(origin(url) for url in endpoints))

    def allows(self, url: str) -> bool:
        """True when ``url`` is an http(s) URL whose origin is listed; False for anything else
        (another host, port or scheme, http off loopback, an unreadable URL)."""
        try:
            return origin(url) in self.origins
        except ValueError:
            return False
