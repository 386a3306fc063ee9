"""Web origins: the one spelling of ``scheme://host[:port]`` that return URLs are checked against.

An account declares the origins its admins may be sent back to after a consent; a
``return_url`` is allowed only when its origin is one of them (or the daemon's own). Both
sides go through ``normalise_origin``, so they compare as plain strings:

- the scheme and host in lower case; an internationalised host in its ASCII (IDNA) form;
- the default port (443 for https, 80 for http) left out, any other port kept;
- https only, except http on the loopback hosts (``localhost``, ``127.0.0.1``, ``[::1]``)
  for local development;
- nothing else: no user name or password, path (a single ``/`` is tolerated), query or
  fragment, no whitespace or backslash (which browsers and parsers read differently).

Pure functions; each refusal is a ``ValueError`` whose message completes the sentence
"the origin …".
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from mailbox_worker.policy.domains import ascii_domain

HTTPS = "https"
HTTP = "http"
DEFAULT_PORTS = {HTTPS: 443, HTTP: 80}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
MAX_HOST_LENGTH = 253
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# WHATWG URL parsing reads a host whose last label is a number as an IPv4 address.
_ENDS_IN_NUMBER = re.compile(r"(?:^|\.)(?:[0-9]+|0x[0-9a-f]*)$")


def normalise_origin(text: str, *, http_anywhere: bool = False) -> str:
    """The normalised form of the origin ``text`` (e.g. ``https://Bücher.example:443/`` →
    ``https://xn--bcher-kva.example``); ``ValueError`` saying why it is not one.

    ``http_anywhere`` accepts http on any host (for the daemon's own configured address).
    """
    if any(character.isspace() or character == "\\" for character in text):
        raise ValueError("must not contain whitespace or backslashes")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError("is not a URL") from None
    if parts.scheme.lower() not in DEFAULT_PORTS:
        raise ValueError("must start with https://")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text or "#" in text:
        raise ValueError("must be scheme, host and port only (no path, query or fragment)")
    return _origin(parts.scheme, parts.netloc, http_anywhere=http_anywhere)


def url_origin(url: str, *, http_anywhere: bool = False) -> str:
    """The normalised origin of the http(s) URL ``url``; ``ValueError`` when it has none
    that could be declared (see ``normalise_origin``)."""
    if any(character.isspace() or character == "\\" for character in url):
        raise ValueError("must not contain whitespace or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("is not a URL") from None
    return _origin(parts.scheme, parts.netloc, http_anywhere=http_anywhere)


def _origin(scheme: str, netloc: str, *, http_anywhere: bool) -> str:
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ValueError("must start with https://")
    if not netloc:
        raise ValueError("has no host")
    if "@" in netloc:
        raise ValueError("must not contain a user name or password")
    host_text, port = _split_port(netloc)
    host = _host(host_text)
    if scheme == HTTP and not http_anywhere and host not in LOOPBACK_HOSTS:
        raise ValueError("must use https (http only for localhost, 127.0.0.1 and [::1])")
    shown_port = "" if port is None or port == DEFAULT_PORTS[scheme] else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def _split_port(netloc: str) -> tuple[str, int | None]:
    if netloc.startswith("["):  # an IPv6 literal: its colons are not the port's
        end = netloc.find("]")
        if end < 0:
            raise ValueError("has an invalid IPv6 literal")
        host, rest = netloc[: end + 1], netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("has an invalid host")
        port_text = rest[1:]
    else:
        host, _, port_text = netloc.partition(":")
    if not host:
        raise ValueError("has no host")
    if not port_text:  # "https://host:" means the default port, to browsers too
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
        raise ValueError("has an invalid port")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError("has an invalid port")
    return host, port


def _host(text: str) -> str:
    if text.startswith("["):
        if text.lower() in ("[::1]", "[0:0:0:0:0:0:0:1]"):
            return "[::1]"
        raise ValueError("may be an IPv6 literal only for [::1]")
    try:
        text = ascii_domain(text)  # as the browser's Origin header spells it
    except UnicodeError:
        raise ValueError("has a host that is not a valid internationalised name") from None
    host = text.lower()
    if _ENDS_IN_NUMBER.search(host):
        try:
            return str(ipaddress.IPv4Address(host))
        except ValueError:
            raise ValueError("has an invalid IPv4 address") from None
    if len(host) > MAX_HOST_LENGTH or not all(_LABEL.fullmatch(part) for part in host.split(".")):
        raise ValueError("has an invalid host name")
    return host
