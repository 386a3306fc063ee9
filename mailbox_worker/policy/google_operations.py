"""Which requests to Google may leave the process at all: the Limited Use allow-list.

docs/privacy.md LU-3 and LU-4: Google user data serve only the user-facing feature (send an
invoice, or leave it as a draft). Every request to a Google API — the Gmail client's and
google-auth's alike — is matched against ``ALLOWED_GOOGLE_OPERATIONS`` by the HTTP layer
below the provider code (``providers/google_gate.py``) before a byte is sent; anything else is
a ``PolicyViolation``. This module holds the list as data, each entry with its reason, and the
pure matching rule; it does no I/O.

Gmail entries are matched on the path alone, on the configured Gmail host: the same method
has three paths (docs/providers.md D1, D3: metadata, ``/upload/`` and ``/resumable/upload/``)
and google-api-python-client sends uploads to the host of ``api_endpoint`` whatever its path
(D7). The OAuth entries are the configured URLs themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

Endpoint = Literal["gmail", "token", "revoke", "userinfo"]
"""The configured base a rule is relative to (``[google]`` ``gmail_url``, ``token_url``, …)."""

_USER = r"users/[^/]+"
_PATHS = r"/(?:upload/|resumable/upload/)?gmail/v1/"


@dataclass(frozen=True, slots=True)
class AllowedOperation:
    """One kind of request that may leave for Google, and why it is needed.

    ``path`` is a regular expression matched against the whole URL path (Gmail), or ``None``
    when the URL must be the configured ``endpoint`` exactly (OAuth). ``upload_session`` rules
    match only URLs of a resumable session (``upload_id`` in the query).
    """

    name: str
    endpoint: Endpoint
    method: str
    path: str | None
    reason: str
    upload_session: bool = False


ALLOWED_GOOGLE_OPERATIONS: Final[tuple[AllowedOperation, ...]] = (
    AllowedOperation(
        "gmail.users.messages.send",
        "gmail",
        "POST",
        _PATHS + _USER + "/messages/send",
        "send mode: the invoice leaves from the customer's mailbox (PP-1; docs/providers.md D1)",
    ),
    AllowedOperation(
        "gmail.users.drafts.create",
        "gmail",
        "POST",
        _PATHS + _USER + "/drafts",
        "draft mode: the invoice is left as a draft for a person to check (PP-1)",
    ),
    AllowedOperation(
        "gmail.users.drafts.send",
        "gmail",
        "POST",
        _PATHS + _USER + "/drafts/send",
        "sending a draft this service created; part of LU-3's list, not used by the provider yet",
    ),
    AllowedOperation(
        "gmail.upload.session",
        "gmail",
        "PUT",
        _PATHS + _USER + "/(?:messages/send|drafts|drafts/send)",
        "the bytes of a resumable upload opened by one of the three methods above (D3)",
        upload_session=True,
    ),
    AllowedOperation(
        "oauth.token",
        "token",
        "POST",
        None,
        "redeeming the consent's code and refreshing access tokens (docs/providers.md C3)",
    ),
    AllowedOperation(
        "oauth.revoke",
        "revoke",
        "POST",
        None,
        "revoking the grant on disconnect or when it is refused (PP-2, LU-2; C5)",
    ),
    AllowedOperation(
        "openid.userinfo",
        "userinfo",
        "GET",
        None,
        "the signed-in address, should the id_token lack it (LU-3's list; not called today)",
    ),
)
"""Everything the daemon may ask of Google. Reading, listing, modifying or deleting mail is
absent on purpose: adding an entry needs a reason here and a row in docs/compliance.md."""

GMAIL_OVER_SMTP_REFUSED: Final = (
    "Gmail over SMTP is not offered: SMTP with XOAUTH2 needs the full-mail scope "
    "https://mail.google.com/ (docs/providers.md D6), which reads and deletes every message, "
    "and Limited Use allows only the scopes sending needs (docs/privacy.md LU-1). Google "
    "mailboxes send through the Gmail API with gmail.send (and gmail.compose for drafts)."
)
"""Why a configuration asking for SMTP to a Google mailbox is refused."""

_USER_SEGMENT = re.compile(r"/users/[^/]+")


def allowed_operation(
    method: str, url: str, endpoints: Mapping[Endpoint, str]
) -> AllowedOperation | None:
    """The entry of ``ALLOWED_GOOGLE_OPERATIONS`` that lets ``method url`` through, or None.

    ``endpoints`` are the configured URLs; a Gmail rule needs the URL's scheme, host and port
    to equal those of ``endpoints["gmail"]``, an OAuth rule the whole URL (query aside) to
    equal its endpoint. An endpoint missing from ``endpoints`` allows nothing.
    """
    target = urlsplit(url)
    for rule in ALLOWED_GOOGLE_OPERATIONS:
        base = endpoints.get(rule.endpoint)
        if base is None or rule.method != method.upper():
            continue
        configured = urlsplit(base)
        if (target.scheme, target.netloc) != (configured.scheme, configured.netloc):
            continue
        if rule.path is None:
            if target.path == configured.path and not target.fragment:
                return rule
            continue
        in_session = "upload_id=" in target.query
        if re.fullmatch(rule.path, target.path) and in_session == rule.upload_session:
            return rule
    return None


def described(method: str, url: str) -> str:
    """``METHOD host/path`` with the user segment masked and the query dropped: what an audit
    event or a log line may say about a refused request (no address, no token; LU-5)."""
    target = urlsplit(url)
    path = _USER_SEGMENT.sub("/users/{userId}", target.path)
    return f"{method.upper()} {target.netloc}{path}"[:200]
