"""Who signed in, by what the identity provider never changes or reuses; which sign-in may
(re)connect which mailbox. Pure values and rules, no I/O.

A mailbox is pinned to the account that first connected it (docs/identity.md):

* Microsoft: the tenant (``tid``) and the user's object id in it (``oid``). Both are GUIDs
  Entra never reassigns; the ``email`` claim, by contrast, is an attribute a tenant admin may
  set to anything (it is not verified in every tenant), and a user deleted and re-created, or
  a guest in another tenant, may carry the same address under another ``oid``.
* Google: ``sub``, unique among all Google Accounts and never reused (Google's OpenID
  Connect documentation). Its issuer is not recorded: every Google grant comes from the one
  configured token endpoint, and Google spells its single issuer two ways
  (``https://accounts.google.com`` and ``accounts.google.com``), which would only make the same
  account look different.

A mailbox connected before pinning existed has no pinned account: its next successful
reconnect still checks the address and pins the account that signed in.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AccountId:
    """An account at an identity provider: ``tenant`` (Entra ``tid``; None for Google) and
    ``subject`` (Entra ``oid``, Google ``sub``)."""

    tenant: str | None
    subject: str


def may_connect(pinned: AccountId | None, signed_in: AccountId) -> bool:
    """Whether ``signed_in`` may (re)connect a mailbox pinned to ``pinned``.

    An unpinned mailbox (new, or connected before pinning) accepts any account; a pinned one
    only the very same account.
    """
    return pinned is None or pinned == signed_in
