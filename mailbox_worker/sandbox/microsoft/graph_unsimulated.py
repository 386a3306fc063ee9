"""What Graph answers outside the mail operations the sandbox simulates (docs/providers.md F).

A client may call operations the daemon never needs: reading the user (``GET /me``, simulated,
as SDKs and samples call it first), and reads, lists and updates of mail, which the sandbox does
not keep. Such a call answers as Graph would when the token lacks the permission the operation
needs (403, with the code Graph gives for that API: ``ErrorAccessDenied`` for Outlook mail,
``Authorization_RequestDenied`` for directory objects), and otherwise with a plain
``501 NotImplemented`` in Graph's error shape saying the sandbox does not simulate it
(*chosen*). A path Graph does not have at all keeps Graph's
``400 BadRequest "Resource not found for the segment …"`` (``graph_errors``).
"""

from __future__ import annotations

from typing import Any

from .graph_errors import GraphFailure
from .state import User

# Outlook mail resources under a user (least delegated permissions as in the Graph permissions
# reference: reading needs one of Mail.ReadBasic / Mail.Read / Mail.ReadWrite, changing needs
# Mail.ReadWrite).
MAIL_SEGMENTS = frozenset(
    {"messages", "mailfolders", "inferenceclassification", "mailboxsettings", "outlook"}
)
MAIL_READ = frozenset(
    {"mail.readbasic", "mail.read", "mail.readwrite", "mail.read.shared", "mail.readwrite.shared"}
)
MAIL_WRITE = frozenset({"mail.readwrite", "mail.readwrite.shared"})
USER_READ = frozenset(
    {
        "user.read",
        "user.readwrite",
        "user.readbasic.all",
        "user.read.all",
        "user.readwrite.all",
        "directory.read.all",
        "directory.readwrite.all",
    }
)
USER_WRITE = frozenset({"user.readwrite", "user.readwrite.all", "directory.readwrite.all"})

MAIL_DENIED = GraphFailure(
    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
)
DIRECTORY_DENIED = GraphFailure(
    403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
)


def permission_for(method: str, tail: str) -> tuple[frozenset[str], GraphFailure] | None:
    """The permissions (any one suffices) an unsimulated call under a user needs, and Graph's
    refusal without them; None when the sandbox does not know (then it is just 501)."""
    segment = tail.strip("/").partition("/")[0].lower()
    reading = method in ("GET", "HEAD")
    if segment in MAIL_SEGMENTS:
        return (MAIL_READ if reading else MAIL_WRITE), MAIL_DENIED
    if segment == "":
        return (USER_READ if reading else USER_WRITE), DIRECTORY_DENIED
    return None


def user_resource(user: User, origin: str) -> dict[str, Any]:
    """The ``user`` JSON ``GET /me`` answers with (the default properties)."""
    return {
        "@odata.context": f"{origin}/v1.0/$metadata#users/$entity",
        "businessPhones": [],
        "displayName": user.display_name,
        "givenName": None,
        "jobTitle": None,
        "mail": user.address,
        "mobilePhone": None,
        "officeLocation": None,
        "preferredLanguage": None,
        "surname": None,
        "userPrincipalName": user.user_principal_name or user.address,
        "id": user.object_id,
    }
