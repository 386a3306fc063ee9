"""Attachments on drafts: the small-attachment POST and large-file upload sessions
(docs/providers.md B2).

* ``POST .../messages/{id}/attachments`` — a ``fileAttachment`` (``contentBytes`` base64) → 201;
* ``POST .../messages/{id}/attachments/createUploadSession`` — for 3 MB to 150 MB files → 201 with
  a pre-authenticated ``uploadUrl`` (``authtoken`` query parameter, no bearer token);
* ``PUT {uploadUrl}`` with ``Content-Range: bytes start-end/total``, in order, each chunk at most
  4 MB → 200 + ``nextExpectedRanges``; the last chunk → 201, empty, ``Location`` of the attachment;
* ``DELETE {uploadUrl}`` → 204.

All need ``Mail.ReadWrite`` (checked by ``graph.GraphEndpoints``) and a draft of the caller's
mailbox. The upload URL lives on the sandbox host under ``/api/v2.0/`` (Outlook's REST path).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import secrets
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import quote

from aiohttp import web

from .authorize import base_url
from .graph_errors import GraphFailure, read_limited
from .graph_messages import fold_names, graph_id
from .state import AccessToken, MicrosoftState, StoredMessage, User

UPLOAD_SESSION_MINIMUM = 3 * 1024 * 1024
UPLOAD_SESSION_MAXIMUM = 150 * 1024 * 1024
CHUNK_LIMIT = 4 * 1024 * 1024
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_SESSION_PATH = "/api/v2.0/Users('{user}')/Messages('{message}')/AttachmentSessions('{session}')"


@dataclass
class UploadSession:
    """A large attachment being uploaded into a draft."""

    message_id: str
    user_id: str
    name: str
    size: int
    content_type: str
    authtoken: str
    expires_at: datetime.datetime
    received: bytearray = field(default_factory=bytearray)


def draft_of(state: MicrosoftState, message_id: str, user: User) -> StoredMessage:
    """The user's draft ``message_id``; 404 ErrorItemNotFound otherwise (also once sent)."""
    stored = state.message(message_id)
    if stored is None or stored.folder != "drafts" or stored.mailbox != user.address:
        raise GraphFailure(
            404, "ErrorItemNotFound", "The specified object was not found in the store."
        )
    return stored


def attach(stored: StoredMessage, name: str, content_type: str, data: bytes) -> None:
    """Add a file to a stored draft, re-rendering its MIME as Exchange would."""
    message = BytesParser(policy=policy.default).parsebytes(stored.raw)
    assert isinstance(message, EmailMessage)
    maintype, _, subtype = content_type.partition("/")
    message.add_attachment(
        data, maintype=maintype or "application", subtype=subtype or "octet-stream", filename=name
    )
    stored.raw = message.as_bytes(policy=policy.SMTP)  # its attachments are read anew


def _json(body: bytes) -> dict[str, Any]:
    """The JSON object of ``body``, its names lower-cased (``fold_names``)."""
    try:
        document = fold_names(json.loads(body))
    except ValueError as problem:
        raise GraphFailure(400, "BadRequest", "Unable to read JSON request payload.") from problem
    if not isinstance(document, dict):
        raise GraphFailure(400, "BadRequest", "Unable to read JSON request payload.")
    return document


class AttachmentOperations:
    """Handlers for attachments and upload sessions."""

    def __init__(self, state: MicrosoftState) -> None:
        self._state = state
        self._sessions: dict[str, UploadSession] = {}

    def routes(self) -> list[web.RouteDef]:
        """The pre-authenticated upload URL's routes (the others go through ``graph``)."""
        path = _SESSION_PATH.format(user="{user}", message="{message}", session="{session}")
        return [web.put(path, self.upload_chunk), web.delete(path, self.cancel_upload)]

    async def add_attachment(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        """``POST .../messages/{id}/attachments`` with a fileAttachment."""
        stored = draft_of(self._state, request.match_info["message_id"], user)
        document = _json(body)
        try:
            data = base64.b64decode(str(document.get("contentbytes", "")), validate=True)
        except (binascii.Error, ValueError) as problem:
            raise GraphFailure(
                400, "ErrorInvalidRequest", "The contentBytes is not valid base64."
            ) from problem
        name = str(document.get("name") or "attachment")
        content_type = str(document.get("contenttype") or "application/octet-stream")
        attach(stored, name, content_type, data)
        resource = {
            "@odata.context": f"{base_url(request)}/v1.0/$metadata#users('{user.object_id}')"
            f"/messages('{stored.id}')/attachments/$entity",
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": graph_id("AAMkAGAttach")[:120],
            "lastModifiedDateTime": stored.created_at,
            "name": name,
            "contentType": content_type,
            "size": len(data),
            "isInline": bool(document.get("isinline", False)),
            "contentId": document.get("contentid"),
            "contentBytes": base64.b64encode(data).decode("ascii"),
        }
        return web.json_response(resource, status=201)

    async def create_upload_session(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        """``POST .../messages/{id}/attachments/createUploadSession``."""
        stored = draft_of(self._state, request.match_info["message_id"], user)
        item = _json(body).get("attachmentitem")
        if not isinstance(item, dict) or not isinstance(item.get("size"), int):
            raise GraphFailure(
                400, "ErrorInvalidRequest", "AttachmentItem with a size is required."
            )
        size = int(item["size"])
        if size < UPLOAD_SESSION_MINIMUM:
            raise GraphFailure(
                400,
                "ErrorAttachmentSizeShouldNotBeLessThanMinimumSize",
                "Attachment size must be greater than the minimum size.",
            )
        if size > UPLOAD_SESSION_MAXIMUM:
            # Code for this case is unconfirmed (docs/providers.md B2).
            raise GraphFailure(400, "ErrorAttachmentSizeExceeded", "The attachment is too large.")
        session_id = graph_id("")[:60].replace("-", "A").replace("_", "B")
        expires = self._state.clock.utcnow() + datetime.timedelta(hours=6)
        session = UploadSession(
            message_id=stored.id,
            user_id=user.object_id,
            name=str(item.get("name") or "attachment"),
            size=size,
            content_type=str(item.get("contenttype") or "application/octet-stream"),
            authtoken=secrets.token_urlsafe(48),
            expires_at=expires,
        )
        self._sessions[session_id] = session
        path = _SESSION_PATH.format(
            user=user.object_id, message=quote(stored.id, safe=""), session=session_id
        )
        return web.json_response(
            {
                "@odata.context": "https://graph.microsoft.com/v1.0/"
                "$metadata#microsoft.graph.uploadSession",
                "uploadUrl": f"{base_url(request)}{path}?authtoken={session.authtoken}",
                "expirationDateTime": expires.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
                "nextExpectedRanges": ["0-"],
            },
            status=201,
        )

    def _session(self, request: web.Request) -> tuple[str, UploadSession]:
        session_id = request.match_info["session"]
        session = self._sessions.get(session_id)
        if session is None or not secrets.compare_digest(
            request.query.get("authtoken", ""), session.authtoken
        ):
            raise GraphFailure(404, "ErrorItemNotFound", "The upload session was not found.")
        if session.expires_at < self._state.clock.utcnow():
            del self._sessions[session_id]
            raise GraphFailure(404, "ErrorItemNotFound", "The upload session has expired.")
        return session_id, session

    async def upload_chunk(self, request: web.Request) -> web.StreamResponse:
        """``PUT {uploadUrl}``: one in-order byte range."""
        self._state.count("graph.uploadChunk")
        session_id, session = self._session(request)
        match = _CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
        if match is None:
            raise GraphFailure(400, "ErrorInvalidRequest", "The Content-Range header is missing.")
        start, end, total = (int(value) for value in match.groups())
        if total != session.size or end < start or end >= total:
            raise GraphFailure(416, "invalidRange", "The Content-Range is not valid.")
        if start != len(session.received):
            code = "fragmentOverlap" if start < len(session.received) else "fragmentOutOfOrder"
            raise GraphFailure(
                416, code, f"Expected the range starting at {len(session.received)}."
            )
        if end - start + 1 > CHUNK_LIMIT:
            raise GraphFailure(413, "RequestEntityTooLarge", "A fragment may not exceed 4MB.")
        chunk = await read_limited(request, end - start + 1)
        if chunk is None or len(chunk) != end - start + 1:
            raise GraphFailure(
                400, "ErrorInvalidRequest", "The body length differs from the range."
            )
        session.received.extend(chunk)
        if len(session.received) < session.size:
            return web.json_response(
                {
                    "@odata.context": f"{base_url(request)}/api/v2.0/$metadata#UploadSession",
                    "ExpirationDateTime": session.expires_at.strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
                    "nextExpectedRanges": [str(len(session.received))],
                }
            )
        del self._sessions[session_id]
        stored = self._state.message(session.message_id)
        if stored is None or stored.folder != "drafts":
            raise GraphFailure(
                404, "ErrorItemNotFound", "The specified object was not found in the store."
            )
        attach(stored, session.name, session.content_type, bytes(session.received))
        attachment_id = graph_id("AAMkAGAttach")[:120]
        location = (
            f"{base_url(request)}/api/v2.0/Users('{session.user_id}')/Messages('"
            f"{quote(stored.id, safe='')}')/Attachments('{quote(attachment_id, safe='')}')"
        )
        return web.Response(status=201, headers={"Location": location})

    async def cancel_upload(self, request: web.Request) -> web.StreamResponse:
        """``DELETE {uploadUrl}``: forget the session."""
        session_id, _ = self._session(request)
        del self._sessions[session_id]
        return web.Response(status=204)
