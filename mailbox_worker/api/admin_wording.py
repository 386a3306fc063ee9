"""What the admin page says: consent outcomes, mailbox states and their reasons, in plain words.

Every code shown has a sentence here; a code without one (a provider's new error) is shown as
it is, after a generic sentence, so the page never hides what happened.
"""

from __future__ import annotations

from collections.abc import Mapping

from mailbox_worker.api.services import CONNECTED_OUTCOME
from mailbox_worker.states import MailboxState

OUTCOMES: Mapping[str, str] = {
    CONNECTED_OUTCOME: "The mailbox is connected.",
    "access_denied": "The consent was cancelled or refused: the mailbox is not connected.",
    "consent_failed": "The provider reported an error during the consent: the mailbox is "
    "not connected.",
    "admin_consent_required": "The organisation lets only an administrator approve this app: "
    "the mailbox is not connected. Ask an administrator of your Microsoft 365 organisation to "
    "approve it (the admin_consent_url the connection returned), then connect again.",
    "admin_consent_answered": "The administrator's approval was answered: connect the mailbox "
    "again.",
    "scope_missing": "The consent did not grant every permission this mailbox needs, so it "
    "was not connected and the partial grant was discarded. Connect again and keep every "
    "permission ticked.",
    "scope_too_broad": "The grant carried a permission that reads or manages the whole "
    "mailbox, more than sending invoices needs, so it was not connected and the grant was "
    "revoked. Remove this app's access in the account's security settings, then connect again.",
    "address_mismatch": "You signed in as another mailbox than the one being reconnected: "
    "nothing was changed.",
    "address_unknown": "The provider did not say which mailbox signed in: it was not connected.",
    "address_invalid": "The provider gave an address that is not a valid mail address: the "
    "mailbox was not connected.",
    "identity_unknown": "The provider did not say which account signed in: the mailbox was "
    "not connected.",
    "identity_mismatch": "You signed in as another account than the one this mailbox was "
    "connected with, even if the address is the same: nothing was changed. Sign in as that "
    "account, or connect a new mailbox.",
    "state_invalid": "This authorization link is unknown or was already used. Start again.",
    "state_expired": "The consent took too long. Start again.",
    "code_rejected": "The provider refused the authorization code. Start again.",
    "provider_unavailable": "The provider could not be reached. Try again in a moment.",
    "mailbox_disconnected": "The mailbox was disconnected in the meantime.",
}
CAPABILITY_LABELS: Mapping[str, str] = {
    "send": "send: send invoices from this mailbox",
    "draft": "draft: leave invoices as drafts for a person to review",
}

PROVIDER_LABELS: Mapping[str, str] = {
    "microsoft": "Microsoft 365",
    "google": "Google (Gmail)",
}
STATE_LABELS: Mapping[str, str] = {
    MailboxState.PENDING_CONSENT: "Waiting for consent",
    MailboxState.CONNECTED: "Connected",
    MailboxState.REAUTH_REQUIRED: "Needs reconnecting",
    MailboxState.DISCONNECTED: "Disconnected",
}
# Why a mailbox needs its admin again (``state_reason`` of ``reauth_required``): the token
# services' ``ReauthRequired`` codes, which are OAuth error codes or ours.
REAUTH_REASONS: Mapping[str, str] = {
    "invalid_grant": "The provider no longer accepts this mailbox's grant (revoked, expired, or "
    "the password changed). Its jobs are held until it is reconnected.",
    "no_grant": "No usable grant is stored for this mailbox. Its jobs are held until it is "
    "reconnected.",
    "interaction_required": "The provider wants the mailbox's owner to sign in again. Its jobs "
    "are held until it is reconnected.",
    "consent_required": "The provider wants the consent given again. Its jobs are held until "
    "it is reconnected.",
    "provider_unconfigured": "The daemon is no longer configured for this provider: ask its "
    "operator. Its jobs are held meanwhile.",
}
PROVIDER_DISCONNECT_NOTES: Mapping[str, str] = {
    "microsoft": " For Microsoft 365, also remove the application's consent in Microsoft Entra "
    "(Enterprise applications, then Permissions) to revoke it at Microsoft.",
}


def reason_text(code: str) -> str:
    """A sentence for a mailbox's ``state_reason`` code."""
    if code in REAUTH_REASONS:
        return REAUTH_REASONS[code]
    if code in OUTCOMES and code != CONNECTED_OUTCOME:
        return f"Last consent: {OUTCOMES[code]}"
    return "The provider or the daemon gave this reason:"
