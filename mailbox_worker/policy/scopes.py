"""Which OAuth scopes a mailbox needs: a pure function of provider and capabilities.

Least privilege (privacy PP-1, LU-1): `send` needs only the permission to send; `draft` adds
the permission to create drafts. Nothing that reads, lists or deletes mail is ever asked for.
msal adds the sign-in scopes (openid, profile, offline_access) itself and refuses them when
passed explicitly, so they are listed separately; the OpenID ``email`` scope (an id_token
claim, no mailbox access) is asked for both providers to learn the mailbox's address.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

Provider = Literal["microsoft", "google"]
Capability = Literal["send", "draft"]

PROVIDERS: frozenset[str] = frozenset({"microsoft", "google"})
"""Providers a mailbox can be created for (the API document's ``Provider`` enum)."""
IDENTITY_PROVIDERS: frozenset[str] = frozenset({"microsoft", "google"})
"""Providers whose OAuth connection is implemented (Google sending comes with Gmail)."""
CAPABILITIES: frozenset[str] = frozenset({"send", "draft"})

GRAPH = "https://graph.microsoft.com/"
GRAPH_MAIL_SEND = GRAPH + "Mail.Send"
GRAPH_MAIL_READWRITE = GRAPH + "Mail.ReadWrite"
MICROSOFT_SIGN_IN_SCOPES: tuple[str, ...] = ("openid", "profile", "offline_access")
# Asked with the API scopes: its id_token claim is the user's primary SMTP address, which the
# sign-in name (``preferred_username``, the UPN) need not be.
MICROSOFT_EMAIL_SCOPE = "email"
GMAIL = "https://www.googleapis.com/auth/"
GMAIL_SEND = GMAIL + "gmail.send"
GMAIL_COMPOSE = GMAIL + "gmail.compose"
GOOGLE_SIGN_IN_SCOPES: tuple[str, ...] = ("openid", "email")

# Scopes no configuration may add: they read, modify or administer whole mailboxes.
BROADER_THAN_NEEDED: frozenset[str] = frozenset(
    scope.lower()
    for scope in (
        GRAPH + "Mail.Read",
        GRAPH + "Mail.ReadBasic",
        GRAPH + "Mail.ReadWrite.Shared",
        GRAPH + "Mail.Send.Shared",
        GRAPH + "MailboxSettings.ReadWrite",
        GRAPH + "Directory.ReadWrite.All",
        GRAPH + "User.ReadWrite.All",
        "Mail.Read",
        "Mail.ReadWrite.Shared",
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/POP.AccessAsUser.All",
        "https://mail.google.com/",
        "https://www.googleapis.com/auth/gmail.modify",
        "https://www.googleapis.com/auth/gmail.readonly",
        "https://www.googleapis.com/auth/gmail.metadata",
    )
)


def required_scopes(provider: str, capabilities: Iterable[str]) -> tuple[str, ...]:
    """The API scopes (without sign-in scopes) a mailbox with ``capabilities`` needs, sorted.

    Raises ``ValueError`` for an unknown provider or capability.
    """
    wanted = frozenset(capabilities)
    if provider not in IDENTITY_PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}")
    unknown = wanted - CAPABILITIES
    if unknown or not wanted:
        raise ValueError(f"capabilities must be a non-empty subset of {sorted(CAPABILITIES)}")
    if provider == "google":
        # gmail.send is "sensitive"; gmail.compose (drafts) is "restricted": only for drafts.
        scopes = {GMAIL_SEND, GMAIL_COMPOSE} if "draft" in wanted else {GMAIL_SEND}
    else:
        scopes = {GRAPH_MAIL_SEND, GRAPH_MAIL_READWRITE} if "draft" in wanted else {GRAPH_MAIL_SEND}
    return tuple(sorted(scopes))


def missing_scopes(required: Iterable[str], granted: Iterable[str]) -> tuple[str, ...]:
    """Scopes in ``required`` that ``granted`` lacks.

    Comparison ignores case and accepts Graph's short form (``Mail.Send``) for the full URI,
    since the token endpoint may echo either.
    """
    granted_normalised = {_normalise(scope) for scope in granted}
    return tuple(scope for scope in required if _normalise(scope) not in granted_normalised)


def broader_scopes(granted: Iterable[str]) -> tuple[str, ...]:
    """Scopes in ``granted`` that read, modify or administer whole mailboxes
    (``BROADER_THAN_NEEDED``): a grant carrying one is refused and revoked, never kept, even
    when the provider added it on its own (Google's incremental authorization can bring back a
    scope granted earlier; docs/privacy.md LU-1)."""
    return tuple(
        scope
        for scope in granted
        if scope.lower() in BROADER_THAN_NEEDED or GRAPH + scope.lower() in BROADER_THAN_NEEDED
    )


def _normalise(scope: str) -> str:
    lowered = scope.lower()
    return lowered[len(GRAPH) :] if lowered.startswith(GRAPH) else lowered
