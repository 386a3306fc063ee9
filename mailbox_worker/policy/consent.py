"""What a refused consent means: a pure reading of the error an identity provider redirects with.

Entra writes the reason of a refused consent as an ``AADSTSnnnn:`` prefix of
``error_description`` (docs/providers.md A2, A5). Only the number is read, never echoed: the
text names the tenant and the app and carries trace ids. The numbers below are the ones Entra's
documentation gives for "an administrator must approve this app" (docs/providers.md A8); which
``error`` value accompanies them on the redirect is not documented, so ``error`` is not read.
"""

from __future__ import annotations

import re

ADMIN_APPROVAL_CODES: frozenset[int] = frozenset(
    {
        90093,  # the tenant's policy lets the user grant none (or not all) of the permissions
        90094,  # "Need admin approval": only an admin can grant what the app asks
        90095,  # the user sent an admin consent request (admin consent workflow); unconfirmed
        900941,  # admin consent required: the app is considered risky (step-up consent)
    }
)
"""AADSTS numbers meaning the tenant requires an administrator to consent for the app."""

_AADSTS = re.compile(r"\s*AADSTS(\d{1,9})\b")


def aadsts_code(error_description: str | None) -> int | None:
    """The AADSTS number ``error_description`` starts with, or None."""
    match = _AADSTS.match(error_description or "")
    return int(match.group(1)) if match else None


def needs_admin_approval(error_description: str | None) -> bool:
    """True when a refused Microsoft consent says an administrator must approve the app."""
    return aadsts_code(error_description) in ADMIN_APPROVAL_CODES
