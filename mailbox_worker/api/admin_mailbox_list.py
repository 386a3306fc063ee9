"""The admin page's list of mailboxes: one card each, with what an admin needs to act on it.

A card shows the address, a badge for the state with the reason in words, the provider, the
capabilities, the granted scopes (their last path segment; the whole scope in a tooltip),
how many jobs wait ``held`` for it, until when sending is paused (only while it is), and the
buttons its state allows: connect or reconnect, and disconnect behind a confirmation step
(a ``<details>`` that needs no script).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

from mailbox_worker.api.admin_render import NO_HTML, Html, concatenate, render
from mailbox_worker.api.admin_wording import (
    CAPABILITY_LABELS,
    PROVIDER_DISCONNECT_NOTES,
    PROVIDER_LABELS,
    STATE_LABELS,
    reason_text,
)
from mailbox_worker.api.representations import timestamp
from mailbox_worker.api.services import MailboxView
from mailbox_worker.states import RECONNECTABLE, MailboxState

# Asked with every consent to learn who signed in: not what the mailbox may do.
IDENTITY_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
UNKNOWN_ADDRESS = "Address not known yet"


def mailbox_list(
    mailboxes: list[MailboxView], held_jobs: Mapping[str, int], csrf: str, now: dt.datetime
) -> Html:
    """Every mailbox's card, or a line saying there is none yet."""
    if not mailboxes:
        return render("admin_no_mailboxes.inline.html")
    cards = concatenate(
        _card(mailbox, held_jobs.get(mailbox.id, 0), csrf, now) for mailbox in mailboxes
    )
    return render("admin_mailbox_list.inline.html", mailboxes=cards)


def provider_label(provider: str) -> str:
    return PROVIDER_LABELS.get(provider, provider)


def _card(mailbox: MailboxView, held: int, csrf: str, now: dt.datetime) -> Html:
    return render(
        "admin_mailbox.html",
        mailbox_id=mailbox.id,
        state=mailbox.state,
        state_label=STATE_LABELS.get(mailbox.state, mailbox.state),
        address=mailbox.address or UNKNOWN_ADDRESS,
        provider=provider_label(mailbox.provider),
        reason=_reason(mailbox.state_reason),
        capabilities=_chips(
            (capability, CAPABILITY_LABELS.get(capability, capability))
            for capability in mailbox.capabilities
        )
        or "none",
        scopes=_scopes(mailbox.granted_scopes)
        or ("none yet" if mailbox.state == MailboxState.PENDING_CONSENT else "none"),
        held_jobs=render(
            "admin_held_jobs.inline.html",
            kind="held-some" if held else "held-none",
            count=str(held),
        ),
        paused=_paused(mailbox.paused_until, now),
        created=_time(mailbox.created_at),
        actions=_actions(mailbox, held, csrf),
    )


def _reason(code: str | None) -> Html:
    if not code:
        return NO_HTML
    return render("admin_reason.inline.html", message=reason_text(code), code=code)


def _chips(labelled: Iterable[tuple[str, str]]) -> Html:
    """One chip per ``(label, title)``; empty when there is none."""
    return concatenate(
        render("admin_chip.inline.html", label=label, title=title) for label, title in labelled
    )


def _scopes(granted: tuple[str, ...]) -> Html:
    """The API scopes granted, by their short names (empty when none is)."""
    return _chips(
        (scope.rstrip("/").rsplit("/", 1)[-1], scope)
        for scope in sorted(granted)
        if scope not in IDENTITY_SCOPES
    )


def _time(moment: dt.datetime) -> Html:
    iso = timestamp(moment) or ""
    shown = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return render("admin_time.inline.html", iso=iso, shown=shown)


def _paused(until: dt.datetime | None, now: dt.datetime) -> Html:
    """Until when sending waits (a provider's 429, or a rate or daily cap): only while it does."""
    if until is None or until <= now:
        return NO_HTML
    return render("admin_paused.inline.html", until=_time(until))


def _actions(mailbox: MailboxView, held: int, csrf: str) -> Html:
    if mailbox.state == MailboxState.DISCONNECTED:
        return NO_HTML
    forms: list[Html] = []
    if mailbox.state in RECONNECTABLE:
        label = "Connect" if mailbox.state == MailboxState.PENDING_CONSENT else "Reconnect"
        forms.append(
            render(
                "admin_reconnect.inline.html", mailbox_id=mailbox.id, csrf_token=csrf, label=label
            )
        )
    forms.append(
        render(
            "admin_disconnect.inline.html",
            mailbox_id=mailbox.id,
            csrf_token=csrf,
            address=mailbox.address or "this mailbox",
            held_note=f" ({held} held)" if held else "",
            provider_note=PROVIDER_DISCONNECT_NOTES.get(mailbox.provider, ""),
        )
    )
    return render("admin_actions.inline.html", forms=concatenate(forms))
