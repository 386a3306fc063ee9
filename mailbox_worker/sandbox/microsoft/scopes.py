"""Scope strings as Microsoft identity understands them.

Entra accepts a Graph permission either short (``Mail.Send``) or fully qualified
(``https://graph.microsoft.com/Mail.Send``), case-insensitively. The sandbox compares scopes by
their *canonical* form (short, lower case) but always echoes them back in the form the client
sent, because msal matches cached access tokens by a case-sensitive subset test on the echoed
``scope`` (docs/providers.md A6).
"""

from __future__ import annotations

from collections.abc import Iterable

GRAPH_RESOURCE = "https://graph.microsoft.com/"
OIDC_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
DEFAULT_SCOPE = ".default"

# Delegated Graph permissions the sandbox knows; anything else is AADSTS70011 invalid_scope.
GRAPH_PERMISSIONS = frozenset(
    name.lower()
    for name in (
        "Mail.Send",
        "Mail.Send.Shared",
        "Mail.ReadWrite",
        "Mail.ReadWrite.Shared",
        "Mail.Read",
        "Mail.ReadBasic",
        "User.Read",
        "User.ReadBasic.All",
        "User.ReadWrite.All",
        "User.RevokeSessions.All",
        "Directory.ReadWrite.All",
    )
)

MAIL_SEND = "mail.send"
MAIL_READ_WRITE = "mail.readwrite"
REVOKE_SESSIONS = frozenset(
    {"user.readwrite.all", "directory.readwrite.all", "user.revokesessions.all"}
)


def split(scope_parameter: str) -> list[str]:
    """The space-separated scope parameter as a list, duplicates removed, order kept."""
    return list(dict.fromkeys(part for part in scope_parameter.split(" ") if part))


def canonical(scope: str) -> str:
    """``https://graph.microsoft.com/Mail.Send`` and ``mail.send`` both become ``mail.send``."""
    lowered = scope.lower()
    if lowered.startswith(GRAPH_RESOURCE):
        return lowered[len(GRAPH_RESOURCE) :]
    if lowered.startswith("https://graph.microsoft.com"):
        return lowered[len("https://graph.microsoft.com") :]
    return lowered


def canonical_set(scopes: Iterable[str]) -> frozenset[str]:
    """Canonical forms of all ``scopes``."""
    return frozenset(canonical(scope) for scope in scopes)


def is_known(scope: str) -> bool:
    """True for OIDC scopes, known Graph permissions and the Graph ``.default`` scope."""
    value = canonical(scope)
    return value in OIDC_SCOPES or value in GRAPH_PERMISSIONS or value == DEFAULT_SCOPE


def resource_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes that name a resource permission (everything but the OIDC scopes)."""
    return [scope for scope in scopes if canonical(scope) not in OIDC_SCOPES]
