"""What the Microsoft simulator remembers, in memory, plus the operations tests call in-process.

The HTTP handlers (identity, Graph, admin) only read and change this object; tests running the
sandbox in their own event loop may call the same methods directly (``register_client``,
``add_user``, ``apply_scenario``, ``messages``...). Counters, faults and the token lifetime are
the shared ``SandboxControls`` this state extends.

A default client and tenant exist so the sandbox works with zero setup: client
``sandbox-client`` / ``sandbox-secret`` and tenant ``contoso`` with the users
``billing@contoso.example`` and ``accounts@contoso.example``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import ClassVar, Literal

from ..clients import Client, ClientRegistry
from ..controls import SandboxControls

DEFAULT_CLIENT_ID = "sandbox-client"
DEFAULT_CLIENT_SECRET = "sandbox-secret"
DEFAULT_TENANT = "contoso"
DEFAULT_DOMAIN = "contoso.example"
CODE_LIFETIME = 600
REFRESH_TOKEN_INACTIVITY = 90 * 24 * 3600

Scenario = Literal[
    "revoke_sessions",
    "refresh_token_inactive",
    "interaction_required",
    "consent_removed",
    "user_consent_blocked",
    "reset",
]
SCENARIOS: tuple[str, ...] = (
    "revoke_sessions",
    "refresh_token_inactive",
    "interaction_required",
    "consent_removed",
    "user_consent_blocked",
    "reset",
)


def _stable_id(name: str) -> uuid.UUID:
    """A GUID derived from ``name``: the sandbox's directory is the same on every run."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"https://sandbox.mailbox-worker.invalid/{name}")


@dataclass
class Tenant:
    """A directory; addressed in URLs by name, domain or GUID."""

    name: str
    tenant_id: str
    domains: list[str]
    # "Do not allow user consent": only an administrator's consent lets its users sign in to
    # an app asking for permissions (docs/providers.md A8).
    user_consent_blocked: bool = False


@dataclass
class User:
    """A user with an Exchange Online mailbox (unless ``mailbox_enabled`` is False)."""

    address: str  # the mailbox's primary SMTP address (Entra's `mail`)
    display_name: str
    object_id: str
    tenant_id: str
    mailbox_enabled: bool = True
    # The sign-in name, when it differs from the mail address (common after renames and
    # in tenants whose UPN suffix is not a mail domain).
    user_principal_name: str | None = None
    interaction_required: bool = False
    # Bumped by "revoke sign-in sessions": refresh tokens of an older generation are dead.
    session_generation: int = 0


@dataclass
class AuthorizationCode:
    """An issued, not yet redeemed (or already redeemed) authorization code."""

    client_id: str
    object_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str
    nonce: str | None
    expires_at: float
    redeemed: bool = False


@dataclass
class RefreshToken:
    """A refresh token; rotation issues new ones without killing the old (as Entra does)."""

    client_id: str
    object_id: str
    scopes: list[str]
    session_generation: int
    last_used_at: float
    inactive: bool = False


@dataclass
class AccessToken:
    """A Graph access token; ``scopes`` as granted, compared canonically."""

    client_id: str
    object_id: str
    scopes: list[str]
    expires_at: float


@dataclass
class StoredAttachment:
    """One attachment of a stored message."""

    name: str
    content_type: str
    data: bytes

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the attachment bytes."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class StoredMessage:
    """A message Graph accepted: a draft, or one handed to transport (folder ``sent``)."""

    id: str
    mailbox: str
    folder: Literal["sent", "drafts"]
    internet_message_id: str
    conversation_id: str
    subject: str
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    created_at: str
    raw: bytes
    client_id: str
    _attachments_of: tuple[bytes, list[StoredAttachment]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    @property
    def attachments(self) -> list[StoredAttachment]:
        """The attachments of ``raw``, decoded when first asked for (and again once ``raw``
        changes): accepting a message reads only its headers, so that the sandbox's cost per
        message does not grow with the size of what it is sent."""
        if self._attachments_of is None or self._attachments_of[0] is not self.raw:
            message = BytesParser(policy=policy.default).parsebytes(self.raw)
            assert isinstance(message, EmailMessage)
            self._attachments_of = (self.raw, attachment_parts(message))
        return self._attachments_of[1]


def attachment_parts(message: EmailMessage) -> list[StoredAttachment]:
    """Each attachment of ``message``: file name, content type and decoded bytes."""
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        found.append(
            StoredAttachment(part.get_filename() or "attachment", part.get_content_type(), data)
        )
    return found


@dataclass(frozen=True)
class SlotHolder:
    """A Graph request holding one of its mailbox's concurrent slots when another was refused."""

    operation: str
    client_request_id: str | None
    held_seconds: float
    client_hung_up: bool
    """Its client had already closed the connection (``faults.client_hung_up``): the provider
    may still count a request its client gave up on (a timeout), until it notices."""


@dataclass(frozen=True)
class ConcurrencyRefusal:
    """A Graph request refused 429 as a 5th concurrent one for its mailbox."""

    mailbox: str
    operation: str
    client_request_id: str | None
    holders: tuple[SlotHolder, ...]
    excused_by: str | None = None
    """The ``client-request-id`` of a holder whose client had hung up, so that the client had
    at most 4 requests open counting this one; each such holder excuses one refusal only (two
    refusals beside one abandoned request mean 5 open). None: nothing excuses it."""


class UnknownUserError(LookupError):
    """Raised by the in-process API for an address that is not a sandbox user."""


@dataclass
class MicrosoftState(SandboxControls, ClientRegistry):
    """The Microsoft half of the sandbox's memory. Not thread-safe: use it from the event loop."""

    default_client_id: ClassVar[str] = DEFAULT_CLIENT_ID
    message_size_limit: int = 35 * 1024 * 1024  # Exchange Online's default (docs/providers.md B3)
    clients: dict[str, Client] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    refresh_tokens: dict[str, RefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, AccessToken] = field(default_factory=dict)
    consents: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    admin_consents: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    """Scopes an administrator consented to for everyone, by (tenant id, client id)."""
    stored_messages: dict[str, StoredMessage] = field(default_factory=dict)
    in_flight: Counter[tuple[str, str]] = field(default_factory=Counter)
    peak_in_flight: Counter[str] = field(default_factory=Counter)
    """The most Graph requests ever in progress at once per mailbox (lower-case address), over
    every client: what a test reads to prove the daemon's processes together kept the limit."""
    concurrency_refusals: list[ConcurrencyRefusal] = field(default_factory=list)
    """Every request refused 429 as over its mailbox's concurrency, with what held the slots."""

    def __post_init__(self) -> None:
        if DEFAULT_CLIENT_ID not in self.clients:
            self.register_client(
                DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, [], "Sandbox Invoice Mailer"
            )
        if not self.users:
            self.add_user("billing@contoso.example", "Contoso Billing")
            self.add_user("accounts@contoso.example", "Contoso Accounts")

    # -- directory ---------------------------------------------------------------------------

    def add_user(
        self,
        address: str,
        display_name: str | None = None,
        tenant: str = DEFAULT_TENANT,
        object_id: str | None = None,
        mailbox_enabled: bool = True,
    ) -> User:
        """Add a user, or replace the one holding ``address``; creates the tenant by name.

        The first user of an address gets an object id derived from it (the same on every
        sandbox run, as a real directory's ids stay put); a replacement is a new directory
        object (the old user deleted, another created with the same address, possibly in
        another tenant) with a new object id, as Entra never reuses an ``oid``; ``object_id``
        overrides both.
        """
        if object_id is None:
            replaced = address.lower() in self.users
            object_id = str(uuid.uuid4() if replaced else _stable_id(f"user:{address.lower()}"))
        directory = self.find_tenant(tenant) or self._create_tenant(tenant)
        domain = address.rpartition("@")[2].lower()
        if domain and domain not in directory.domains:
            directory.domains.append(domain)
        user = User(
            address=address,
            display_name=display_name or address.partition("@")[0],
            object_id=object_id,
            tenant_id=directory.tenant_id,
            mailbox_enabled=mailbox_enabled,
        )
        self.users[address.lower()] = user
        return user

    def set_sign_in_name(self, address: str, user_principal_name: str) -> User:
        """Give the user of ``address`` a sign-in name (UPN) other than the mail address."""
        user = self.users[address.lower()]
        user.user_principal_name = user_principal_name
        return user

    def _create_tenant(self, name: str) -> Tenant:
        directory = Tenant(
            name, str(_stable_id(f"tenant:{name.lower()}")), [f"{name}.onmicrosoft.com"]
        )
        self.tenants[directory.tenant_id] = directory
        return directory

    def find_tenant(self, segment: str) -> Tenant | None:
        """The tenant a URL segment names (GUID, name or verified domain), if any."""
        wanted = segment.lower()
        for directory in self.tenants.values():
            if wanted in (directory.tenant_id, directory.name.lower(), *directory.domains):
                return directory
        return None

    def find_user(self, address_or_id: str) -> User | None:
        """A user by mail address, sign-in name (UPN) or object id."""
        key = address_or_id.lower()
        user = self.users.get(key)
        if user is not None:
            return user
        for candidate in self.users.values():
            upn = (candidate.user_principal_name or "").lower()
            if key in (candidate.object_id, upn):
                return candidate
        return None

    def user_by_object_id(self, object_id: str) -> User:
        """The user a token belongs to (tokens only ever name existing users)."""
        for user in self.users.values():
            if user.object_id == object_id:
                return user
        raise UnknownUserError(object_id)

    def _require_user(self, address: str) -> User:
        user = self.find_user(address)
        if user is None:
            raise UnknownUserError(address)
        return user

    # -- scenario switches ------------------------------------------------------------------

    def apply_scenario(self, address: str, scenario: str) -> None:
        """Flip one of the per-user switches; see the module docstring of ``token_endpoint``."""
        user = self._require_user(address)
        if scenario == "revoke_sessions":
            self.revoke_sign_in_sessions(user)
        elif scenario == "refresh_token_inactive":
            for token in self.refresh_tokens.values():
                if token.object_id == user.object_id:
                    token.inactive = True
        elif scenario == "interaction_required":
            user.interaction_required = True
        elif scenario == "consent_removed":
            for key in [key for key in self.consents if key[0] == user.object_id]:
                del self.consents[key]
        elif scenario == "user_consent_blocked":
            self.tenants[user.tenant_id].user_consent_blocked = True
        elif scenario == "reset":
            user.interaction_required = False
            self.tenants[user.tenant_id].user_consent_blocked = False
        else:
            raise ValueError(f"unknown scenario {scenario!r}")

    def revoke_sign_in_sessions(self, user: User) -> None:
        """Every refresh token the user holds, for every app, stops working (AADSTS50173)."""
        user.session_generation += 1

    # -- consent -----------------------------------------------------------------------------

    def grant_consent(self, object_id: str, client_id: str, canonical_scopes: set[str]) -> None:
        """Record that the user consented to these (canonical) scopes for the client."""
        self.consents.setdefault((object_id, client_id), set()).update(canonical_scopes)

    def grant_admin_consent(
        self, tenant_id: str, client_id: str, canonical_scopes: set[str]
    ) -> None:
        """Record an administrator's consent for everyone in the tenant (the admin-consent
        endpoint is not simulated: tests call this)."""
        self.admin_consents.setdefault((tenant_id, client_id), set()).update(canonical_scopes)

    def needs_admin_approval(self, user: User, client_id: str, canonical_scopes: set[str]) -> bool:
        """Whether the user's tenant blocks user consent and no administrator consented to
        all of ``canonical_scopes`` for the client."""
        tenant = self.tenants[user.tenant_id]
        approved = self.admin_consents.get((tenant.tenant_id, client_id), set())
        return tenant.user_consent_blocked and not canonical_scopes <= approved

    def consented_scopes(self, object_id: str, client_id: str) -> set[str]:
        """Canonical scopes the user consented to for the client (empty after removal)."""
        return set(self.consents.get((object_id, client_id), set()))

    # -- messages --------------------------------------------------------------------------

    def store_message(self, message: StoredMessage) -> None:
        """Keep an accepted message."""
        self.stored_messages[message.id] = message

    def messages(
        self, mailbox: str | None = None, folder: str | None = None
    ) -> list[StoredMessage]:
        """Stored messages, oldest first, optionally filtered by mailbox and folder."""
        return [
            message
            for message in self.stored_messages.values()
            if (mailbox is None or message.mailbox.lower() == mailbox.lower())
            and (folder is None or message.folder == folder)
        ]

    def delete_message(self, message_id: str) -> None:
        """Forget a stored message (a deleted draft)."""
        self.stored_messages.pop(message_id, None)

    def message(self, message_id: str) -> StoredMessage | None:
        """One stored message by its Graph id."""
        return self.stored_messages.get(message_id)

    def note_concurrency(self, address: str) -> None:
        """Raise the mailbox's peak to the requests now in progress for it (every client)."""
        mailbox = address.lower()
        now = sum(count for (_, each), count in self.in_flight.items() if each == mailbox)
        self.peak_in_flight[mailbox] = max(self.peak_in_flight[mailbox], now)

    def reset(self) -> None:
        """Forget messages, counters and faults (clients, users and tokens stay)."""
        self.stored_messages.clear()
        self.peak_in_flight.clear()
        self.concurrency_refusals.clear()
        super().reset()
