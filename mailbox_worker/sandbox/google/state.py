"""What the Google OAuth simulator remembers: clients, users, grants, codes and tokens.

Reached as ``SandboxState.google``; the HTTP handlers (``authorize``, ``token_endpoint``,
``admin``) only read and change this object, and tests may call the same methods.

Model. A *grant* is one user's live authorization of one client (Google's "third-party access"
entry): a new consent for a (user, client) pair that already has a live grant widens that grant.
Each code exchange may mint a refresh token (``access_type=offline``: on the first consent, or
always with ``prompt=consent``) and always mints an access token; both belong to the grant.
Revoking any token (``/revoke``) or the ``revoked`` / ``password_changed`` switches kill the whole
grant; ``testing_expired``, ``unused_6_months`` and the refresh-token cap kill refresh tokens
only (access tokens live out their hour). Dead refresh tokens answer ``invalid_grant``.

Zero-setup defaults: client ``sandbox-google-client`` / ``sandbox-google-secret`` (any http
loopback redirect URI) and users ``invoices@fabrikam.example`` and ``billing@fabrikam.example``.
"""

from __future__ import annotations

import datetime
import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from ..clients import Client, ClientRegistry
from ..clock import SandboxClock
from . import scopes as scope_rules

DEFAULT_GOOGLE_CLIENT_ID = "sandbox-google-client"
DEFAULT_GOOGLE_CLIENT_SECRET = "sandbox-google-secret"
DEFAULT_GOOGLE_USERS = ("invoices@fabrikam.example", "billing@fabrikam.example")
GOOGLE_CODE_LIFETIME = 600
REFRESH_TOKEN_CAP = 100  # live refresh tokens per (user, client): docs/providers.md C4

GOOGLE_SCENARIOS: tuple[str, ...] = (
    "revoked",
    "password_changed",
    "testing_expired",
    "unused_6_months",
    "reset",
)


class UnknownGoogleUserError(LookupError):
    """Raised by the in-process API for an address that is not a sandbox Google user."""


@dataclass
class GoogleUser:
    """A Google Account (with Gmail). ``subject`` is the stable numeric ``sub`` claim."""

    address: str
    display_name: str
    subject: str


@dataclass
class GoogleGrant:
    """A user's authorization of a client; ``scopes`` canonical, as token responses spell them."""

    id: str
    client_id: str
    user: str
    scopes: list[str]
    created_at: float
    revoked: bool = False
    revoked_reason: str | None = None


@dataclass
class GoogleCode:
    """An authorization code; ``scopes`` canonical (what the token response will say)."""

    client_id: str
    user: str
    grant_id: str
    redirect_uri: str
    scopes: list[str]
    code_challenge: str | None
    code_challenge_method: str
    issue_refresh_token: bool
    expires_at: float
    redeemed: bool = False


@dataclass
class GoogleRefreshToken:
    """A refresh token; ``dead_reason`` set once it stopped working."""

    grant_id: str
    client_id: str
    user: str
    scopes: list[str]
    issued_at: float
    last_used_at: float
    dead_reason: str | None = None


@dataclass
class GoogleAccessToken:
    """An access token (``ya29.…``); kept for a future Gmail simulator's token check."""

    grant_id: str
    client_id: str
    user: str
    scopes: list[str]
    expires_at: float


@dataclass
class PendingAuthorization:
    """A validated authorize request waiting for the consent form (keyed by a hidden id)."""

    client_id: str
    redirect_uri: str
    scopes: list[str]
    fields: dict[str, str]
    expires_at: float


def _subject_of(address: str) -> str:
    """A ``sub`` shaped like Google's (21 digits), derived from the first account's address."""
    digest = hashlib.sha256(address.lower().encode()).digest()
    return "1" + str(int.from_bytes(digest[:10], "big")).zfill(20)[:20]


def _new_subject() -> str:
    """A fresh ``sub`` for a newly created account."""
    return "1" + "".join(secrets.choice("0123456789") for _ in range(20))


def iso_time(moment: float) -> str:
    """RFC 3339 UTC time for the admin API."""
    return datetime.datetime.fromtimestamp(moment, datetime.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class GoogleState(ClientRegistry):
    """The Google half of the sandbox's memory. Not thread-safe: use it from the event loop."""

    default_client_id: ClassVar[str] = DEFAULT_GOOGLE_CLIENT_ID
    refresh_token_cap: int = REFRESH_TOKEN_CAP
    clients: dict[str, Client] = field(default_factory=dict)
    users: dict[str, GoogleUser] = field(default_factory=dict)
    grants: dict[str, GoogleGrant] = field(default_factory=dict)
    codes: dict[str, GoogleCode] = field(default_factory=dict)
    refresh_tokens: dict[str, GoogleRefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, GoogleAccessToken] = field(default_factory=dict)
    pending: dict[str, PendingAuthorization] = field(default_factory=dict)
    clock: SandboxClock = field(default_factory=SandboxClock)  # SandboxState passes its own

    def __post_init__(self) -> None:
        if DEFAULT_GOOGLE_CLIENT_ID not in self.clients:
            self.register_client(
                DEFAULT_GOOGLE_CLIENT_ID, DEFAULT_GOOGLE_CLIENT_SECRET, [], "Sandbox Invoice Mailer"
            )
        if not self.users:
            for address in DEFAULT_GOOGLE_USERS:
                self.add_user(address)

    # -- directory ---------------------------------------------------------------------------

    def add_user(
        self, address: str, display_name: str | None = None, subject: str | None = None
    ) -> GoogleUser:
        """Add a Google Account, or replace the one holding ``address`` by a new account.

        ``sub`` is never reused (Google: unique among all Google Accounts, never changed): the
        first account of an address gets one derived from it (the same on every sandbox run),
        a replacement (the old account deleted, a new one created with the same address) a new
        one, unless ``subject`` is given. The replaced account's grants die with it.
        """
        key = address.lower()
        replaced = self.users.get(key)
        if subject is None:
            subject = _new_subject() if replaced is not None else _subject_of(address)
        if replaced is not None:
            for grant in self.grants.values():
                if grant.user == key:
                    self.revoke_grant(grant, "account_deleted")
        user = GoogleUser(address, display_name or address.partition("@")[0], subject)
        self.users[key] = user
        return user

    def find_user(self, address: str) -> GoogleUser | None:
        """A Google user by address (case-insensitive)."""
        return self.users.get(address.strip().lower())

    def _require_user(self, address: str) -> GoogleUser:
        user = self.find_user(address)
        if user is None:
            raise UnknownGoogleUserError(address)
        return user

    # -- grants and tokens -------------------------------------------------------------------

    def live_grant(self, user: str, client_id: str) -> GoogleGrant | None:
        """The (user, client) grant that is not revoked, if any."""
        for grant in self.grants.values():
            if grant.user == user.lower() and grant.client_id == client_id and not grant.revoked:
                return grant
        return None

    def consent(self, user: str, client_id: str, scopes: list[str]) -> tuple[GoogleGrant, bool]:
        """Record a consent to canonical ``scopes``; returns the grant and whether it is new."""
        grant = self.live_grant(user, client_id)
        if grant is not None:
            grant.scopes = list(dict.fromkeys(grant.scopes + scopes))
            return grant, False
        grant = GoogleGrant(
            str(uuid.uuid4()), client_id, user.lower(), list(scopes), self.clock.time()
        )
        self.grants[grant.id] = grant
        return grant, True

    def live_refresh_tokens(self, user: str, client_id: str) -> list[str]:
        """Live refresh tokens of (user, client), oldest first."""
        return [
            value
            for value, token in self.refresh_tokens.items()
            if token.user == user.lower()
            and token.client_id == client_id
            and self.refresh_token_problem(token) is None
        ]

    def issue_refresh_token(self, grant: GoogleGrant, scopes: list[str]) -> str:
        """Mint a refresh token; beyond ``refresh_token_cap`` the oldest silently dies."""
        live = self.live_refresh_tokens(grant.user, grant.client_id)
        for value in live[: max(0, len(live) - self.refresh_token_cap + 1)]:
            self.refresh_tokens[value].dead_reason = "token_limit"
        value = "1//0" + secrets.token_urlsafe(72)
        now = self.clock.time()
        self.refresh_tokens[value] = GoogleRefreshToken(
            grant.id, grant.client_id, grant.user, list(scopes), now, now
        )
        return value

    def issue_access_token(self, grant: GoogleGrant, scopes: list[str], lifetime: int) -> str:
        """Mint an access token valid for ``lifetime`` seconds."""
        value = "ya29.a0" + secrets.token_urlsafe(150)
        self.access_tokens[value] = GoogleAccessToken(
            grant.id, grant.client_id, grant.user, list(scopes), self.clock.time() + lifetime
        )
        return value

    def refresh_token_problem(self, token: GoogleRefreshToken) -> str | None:
        """Why ``token`` no longer works (its own death or its grant's), or None."""
        grant = self.grants[token.grant_id]
        if grant.revoked:
            return grant.revoked_reason or "revoked"
        return token.dead_reason

    def access_token_valid(self, value: str) -> GoogleAccessToken | None:
        """The record of a live, unexpired access token (for a future Gmail simulator)."""
        token = self.access_tokens.get(value)
        if (
            token is None
            or token.expires_at < self.clock.time()
            or self.grants[token.grant_id].revoked
        ):
            return None
        return token

    def grant_of_token(self, value: str) -> GoogleGrant | None:
        """The grant an access or refresh token (live or not) belongs to, if it is one of ours."""
        record: GoogleRefreshToken | GoogleAccessToken | None = self.refresh_tokens.get(value)
        if record is None:
            record = self.access_tokens.get(value)
        return None if record is None else self.grants[record.grant_id]

    def revoke_grant(self, grant: GoogleGrant, reason: str) -> None:
        """Kill a grant and with it every access and refresh token it issued."""
        if not grant.revoked:
            grant.revoked, grant.revoked_reason = True, reason

    def grant_list(self) -> list[GoogleGrant]:
        """All grants, oldest first (revoked ones included)."""
        return sorted(self.grants.values(), key=lambda grant: grant.created_at)

    # -- scenario switches (docs/providers.md C4) ------------------------------------------------

    def apply_scenario(self, address: str, scenario: str) -> None:
        """Flip a per-user switch. Switches are events: what they kill stays dead, as at Google.

        ``revoked`` — the user removed access in their Google Account: all their grants die;
        ``password_changed`` — grants that include Gmail scopes die;
        ``testing_expired`` — the 7-day Testing-mode expiry: the user's refresh tokens die;
        ``unused_6_months`` — the user's refresh tokens die as unused for six months;
        ``reset`` — accepted for symmetry with Microsoft; nothing is revived.
        """
        user = self._require_user(address)
        key = user.address.lower()
        if scenario in ("revoked", "password_changed"):
            for grant in self.grants.values():
                if grant.user != key:
                    continue
                if scenario == "revoked":
                    self.revoke_grant(grant, "user_revoked")
                elif any(scope_rules.is_gmail(scope) for scope in grant.scopes):
                    self.revoke_grant(grant, "password_changed")
        elif scenario in ("testing_expired", "unused_6_months"):
            for token in self.refresh_tokens.values():
                if token.user == key and token.dead_reason is None:
                    token.dead_reason = scenario
        elif scenario != "reset":
            raise ValueError(f"unknown scenario {scenario!r}")
