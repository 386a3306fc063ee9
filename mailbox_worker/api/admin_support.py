"""The admin page's support-access section (docs/privacy.md PP-3, LU-5).

It says in plain words whether support access is on (until when, granted with which key and
why; never a secret), what support may see under it, that it ends by itself and that it is
recorded. A key with ``account:write`` (the account admin's) also gets the form to grant it
for one of ``HOURS_CHOICES`` and, while it is on, the button that ends it; a key with only
``account:read`` sees the state; any other key is told which permission it lacks.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from mailbox_worker.accounts import Principal, SupportGrantView
from mailbox_worker.api.admin_render import NO_HTML, Html, concatenate, render
from mailbox_worker.api.auth import ACCOUNT_READ, ACCOUNT_WRITE
from mailbox_worker.api.representations import timestamp

# The page's choices, each within the API's limit (``SupportAccessRequest.hours``, a week);
# the form's schema (``AdminSupportAccessForm``) accepts exactly these.
HOURS_CHOICES: Mapping[int, str] = {1: "1 hour", 24: "24 hours", 168: "7 days"}
DEFAULT_HOURS = 24


def may_read(principal: Principal) -> bool:
    return bool({ACCOUNT_READ, ACCOUNT_WRITE} & principal.permissions)


def may_change(principal: Principal) -> bool:
    return ACCOUNT_WRITE in principal.permissions


def support_section(principal: Principal, grant: SupportGrantView | None, csrf: str) -> Html:
    """The section for ``principal``, given the account's active ``grant`` (None when there is
    none, or when the key may not read it)."""
    if not may_read(principal):
        return render(
            "admin_support.html", status=render("admin_support_unknown.inline.html"), forms=NO_HTML
        )
    return render("admin_support.html", status=_status(grant), forms=_forms(principal, grant, csrf))


def _status(grant: SupportGrantView | None) -> Html:
    if grant is None:
        return render("admin_support_off.inline.html")
    return render(
        "admin_support_on.inline.html",
        until=_time(grant.expires_at),
        granted_by=grant.granted_by,
        granted_at=_time(grant.created_at),
        reason=grant.reason,
    )


def _forms(principal: Principal, grant: SupportGrantView | None, csrf: str) -> Html:
    if not may_change(principal):
        return render("admin_support_read_only.inline.html")
    forms = [
        render(
            "admin_support_grant.inline.html",
            csrf_token=csrf,
            hour_options=concatenate(
                render(
                    "admin_hours_option.inline.html",
                    hours=str(hours),
                    label=label,
                    selected=" selected" if hours == DEFAULT_HOURS else "",
                )
                for hours, label in HOURS_CHOICES.items()
            ),
            label="Grant support access" if grant is None else "Replace with a new grant",
        )
    ]
    if grant is not None:
        forms.append(render("admin_support_revoke.inline.html", csrf_token=csrf))
    return concatenate(forms)


def _time(moment: dt.datetime) -> Html:
    shown = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return render("admin_time.inline.html", iso=timestamp(moment) or "", shown=shown)
