"""Scope strings as Google OAuth 2.0 understands them (docs/providers.md C2, C6, D6).

Google answers with its own spelling of the sign-in scopes: a request for ``email`` / ``profile``
comes back as ``https://www.googleapis.com/auth/userinfo.email`` / ``…/userinfo.profile`` in the
token response, and either of them implies ``openid`` (the famous oauthlib "Scope has changed
from "email profile" to "https://www.googleapis.com/auth/userinfo.email openid
https://www.googleapis.com/auth/userinfo.profile"" warning, googleapis/google-api-python-client
#1088). The sandbox reproduces that; it compares scopes by this *canonical* (long) form.
"""

from __future__ import annotations

from collections.abc import Iterable

AUTH_PREFIX = "https://www.googleapis.com/auth/"
USERINFO_EMAIL = AUTH_PREFIX + "userinfo.email"
USERINFO_PROFILE = AUTH_PREFIX + "userinfo.profile"
GMAIL_FULL = "https://mail.google.com/"
GMAIL_PREFIX = AUTH_PREFIX + "gmail."

_SHORT_FORMS = {"email": USERINFO_EMAIL, "profile": USERINFO_PROFILE}
SIGN_IN_SCOPES = frozenset({"openid", "email", "profile", USERINFO_EMAIL, USERINFO_PROFILE})

# Non-sign-in scopes the sandbox knows; anything else is ``invalid_scope``.
GMAIL_SCOPES = frozenset(
    {GMAIL_FULL}
    | {
        GMAIL_PREFIX + name
        for name in (
            "send",
            "compose",
            "modify",
            "readonly",
            "insert",
            "labels",
            "metadata",
            "settings.basic",
            "settings.sharing",
        )
    }
)


def split(scope_parameter: str) -> list[str]:
    """The space-separated scope parameter as a list, duplicates removed, order kept."""
    return list(dict.fromkeys(part for part in scope_parameter.split(" ") if part))


def canonical(scope: str) -> str:
    """``email`` → ``…/userinfo.email``, ``profile`` → ``…/userinfo.profile``; others as-is."""
    return _SHORT_FORMS.get(scope, scope)


def canonical_list(scopes: Iterable[str]) -> list[str]:
    """Canonical forms in order, deduplicated, with ``openid`` implied by email/profile."""
    result = list(dict.fromkeys(canonical(scope) for scope in scopes))
    if "openid" not in result and ({USERINFO_EMAIL, USERINFO_PROFILE} & set(result)):
        result.append("openid")
    return result


def callback_list(scopes: Iterable[str]) -> list[str]:
    """The ``scope`` of the redirect: as requested, plus the long forms of ``email``/``profile``."""
    spelled = list(scopes)
    return list(dict.fromkeys(spelled + canonical_list(spelled)))


def is_known(scope: str) -> bool:
    """True for the sign-in scopes and the Gmail scopes."""
    return scope in SIGN_IN_SCOPES or scope in GMAIL_SCOPES


def is_sign_in(scope: str) -> bool:
    """True for ``openid``/``email``/``profile`` (always granted, no consent checkbox)."""
    return scope in SIGN_IN_SCOPES


def is_gmail(scope: str) -> bool:
    """True for scopes that give access to Gmail (a password change kills such grants)."""
    return scope == GMAIL_FULL or scope.startswith(GMAIL_PREFIX)
