"""The Gmail API v1 (``gmail.googleapis.com``): messages.send, drafts.create, drafts.send.

Paths as in the discovery document (docs/providers.md D1), so that google-api-python-client
pointed at the sandbox with ``api_endpoint`` reaches every variant (D7):

* ``POST /gmail/v1/users/{userId}/messages/send`` — ``{"raw","threadId"?}`` → the ``Message``;
* ``POST /gmail/v1/users/{userId}/drafts`` — ``{"message":{"raw","threadId"?}}`` → the ``Draft``;
* ``POST /gmail/v1/users/{userId}/drafts/send`` — ``{"id"}`` (a ``message`` replaces the
  content) → the sent ``Message``;
* each also under ``/upload/gmail/v1/…`` (``uploadType=media|multipart|resumable``) and
  ``/resumable/upload/gmail/v1/…``; the resumable session URL is the same path with
  ``upload_id``, taking ``PUT`` (``gmail_uploads``).

Checks, in order: the body within the 35 MB ``maxSize`` (413), the bearer token issued by the
sandbox's token endpoint (401 ``authError``), ``userId`` ``me`` or the token's own address (403),
one of the method's scopes from the discovery document (403 ``insufficientPermissions``), the
user's quota units per minute (429 ``userRateLimitExceeded``, "Retry after …"), queued faults,
then the method: a message is required (400), a sent one needs a recipient (400) and room under
the user's daily sending limit (429 ``rateLimitExceeded`` "… (Mail sending)"; noticed late when
the user's ``sending_limit_detection_delay`` is set, as Google notices it, docs/providers.md
D4). A resumable upload is checked up to the quota when it opens and runs the method when its
last byte arrives.

Counters: ``gmail.messages.send``, ``gmail.drafts.create``, ``gmail.drafts.send`` per call (a
resumable upload counts once, when it opens), ``gmail.upload.chunk`` per PUT,
``gmail.throttled.user_rate`` and ``gmail.throttled.sending_limit``. Faults: the same operation
names; they apply when the method runs (for a resumable upload: at its last chunk).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..controls import Fault, SandboxControls
from ..faults import with_fault
from . import gmail_errors as errors
from . import gmail_uploads as uploads
from .gmail_errors import GmailFailure
from .gmail_messages import MessageFormatError, decode_raw, read_headers, with_message_id
from .gmail_state import DRAFT, SENT, GmailMessage, GmailState, UploadSession
from .scopes import AUTH_PREFIX, GMAIL_FULL
from .state import GoogleState

# The ``scopes`` lists of gmail.v1.json (docs/providers.md D1, D6).
SEND_SCOPES = frozenset(
    {
        GMAIL_FULL,
        AUTH_PREFIX + "gmail.addons.current.action.compose",
        AUTH_PREFIX + "gmail.compose",
        AUTH_PREFIX + "gmail.modify",
        AUTH_PREFIX + "gmail.send",
    }
)
DRAFT_SCOPES = SEND_SCOPES - {AUTH_PREFIX + "gmail.send"}
# Best guesses where docs/providers.md D2 gives no text.
_BAD_RAW = "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed"
_NO_DRAFT_ID = "Invalid draft"

Json = dict[str, Any]


@dataclass(frozen=True)
class Caller:
    """Who calls: the mailbox (lower-case address) and the OAuth client behind the token."""

    user: str
    client_id: str


@dataclass(frozen=True)
class Call:
    """One run of a method: the caller, the JSON metadata, the uploaded message if any, and
    how the message came (``raw``, ``media``, ``multipart``, ``resumable``)."""

    caller: Caller
    metadata: Mapping[str, Any]
    media: bytes | None
    upload: str


@dataclass(frozen=True)
class Method:
    """A Gmail method: its path under ``gmail/v1/``, counter/fault name, units and scopes."""

    path: str
    operation: str
    units: int
    scopes: frozenset[str]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class GmailEndpoints:
    """Handlers for the Gmail methods and their upload variants."""

    def __init__(self, controls: SandboxControls, google: GoogleState, gmail: GmailState) -> None:
        self._controls = controls
        self._google = google
        self._gmail = gmail
        # Quota units per call: docs/providers.md D1.
        methods = (
            Method("users/{userId}/messages/send", "gmail.messages.send", 100, SEND_SCOPES),
            Method("users/{userId}/drafts", "gmail.drafts.create", 10, DRAFT_SCOPES),
            Method("users/{userId}/drafts/send", "gmail.drafts.send", 100, DRAFT_SCOPES),
        )
        self._methods = {method.operation: method for method in methods}
        self._runs: dict[str, Callable[[Call], Json]] = {
            "gmail.messages.send": self._send_message,
            "gmail.drafts.create": self._create_draft,
            "gmail.drafts.send": self._send_draft,
        }

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve."""
        routes = []
        for method in self._methods.values():
            routes.append(web.post(f"/gmail/v1/{method.path}", self._endpoint(method, False)))
            for prefix in ("/upload", "/resumable/upload"):
                path = f"{prefix}/gmail/v1/{method.path}"
                routes.append(web.post(path, self._endpoint(method, True)))
                routes.append(web.put(path, self._chunk_endpoint()))
        return routes

    # -- the request pipeline ----------------------------------------------------------------

    def _endpoint(self, method: Method, upload_path: bool) -> Handler:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            self._controls.count(method.operation)
            try:
                return await self._call(request, method, upload_path)
            except GmailFailure as failure:
                return errors.render(failure)

        return endpoint

    async def _call(
        self, request: web.Request, method: Method, upload_path: bool
    ) -> web.StreamResponse:
        upload = uploads.upload_type(request) if upload_path else "raw"
        limit = {
            "raw": uploads.MAX_METADATA_BODY,
            "media": uploads.MAX_MESSAGE_SIZE,
            "multipart": uploads.MAX_MULTIPART_BODY,
            "resumable": uploads.MAX_METADATA_BODY,
        }[upload]
        body = await uploads.read_limited(request, limit, uploads.MAX_MESSAGE_SIZE)
        caller = self._authorize(request, method)
        if upload == "resumable":
            return self._open_session(request, method, caller, body)
        media: bytes | None = None
        if upload == "media":
            uploads.check_media_type(request.content_type)
            metadata: Mapping[str, Any] = {}
            media = body
        elif upload == "multipart":
            metadata, media = uploads.split_related(body, request.headers.get("Content-Type", ""))
        else:
            metadata = uploads.json_metadata(body)
        self._charge(caller, method)
        return await self._run(request, method, Call(caller, metadata, media, upload))

    async def _run(self, request: web.Request, method: Method, call: Call) -> web.StreamResponse:
        async def process() -> web.StreamResponse:
            try:
                return web.json_response(self._runs[method.operation](call))
            except GmailFailure as failure:
                return errors.render(failure)

        return await with_fault(
            request, self._controls, (method.operation,), process, self._fault_answer
        )

    def _authorize(self, request: web.Request, method: Method) -> Caller:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            # ``access_token`` is one of the discovery document's standard query parameters.
            value = request.query.get("access_token", "")
        token = self._google.access_token_valid(value.strip())
        if token is None:
            raise errors.invalid_credentials()
        user_id = request.match_info["userId"]
        if user_id != "me" and user_id.lower() != token.user:
            raise errors.delegation_denied(user_id)
        if not method.scopes & set(token.scopes):
            raise errors.insufficient_permissions()
        return Caller(token.user, token.client_id)

    def _charge(self, caller: Caller, method: Method) -> None:
        until = self._gmail.charge_units(caller.client_id, caller.user, method.units)
        if until is not None:
            self._controls.count("gmail.throttled.user_rate")
            raise errors.user_rate_limited(until)

    def _fault_answer(self, fault: Fault) -> web.Response:
        retry_after = self._controls.throttle_retry_after
        if fault.retry_after is not None:
            retry_after = fault.retry_after
        response = errors.render(errors.for_status(fault.status, self._controls.now(), retry_after))
        if fault.retry_after is not None:
            response.headers["Retry-After"] = str(fault.retry_after)
        return response

    # -- resumable uploads (docs/providers.md D3) ----------------------------------------------

    def _open_session(
        self, request: web.Request, method: Method, caller: Caller, body: bytes
    ) -> web.Response:
        metadata = uploads.json_metadata(body)
        media_type = request.headers.get("X-Upload-Content-Type")
        if media_type is not None:
            uploads.check_media_type(media_type)
        declared = request.headers.get("X-Upload-Content-Length")
        length = int(declared) if declared is not None and declared.isdigit() else None
        if length is not None and length > uploads.MAX_MESSAGE_SIZE:
            raise errors.too_large(uploads.MAX_MESSAGE_SIZE)
        self._charge(caller, method)
        session = UploadSession(
            secrets.token_urlsafe(48),
            method.operation,
            caller.user,
            caller.client_id,
            metadata,
            length,
        )
        self._gmail.uploads[session.id] = session
        location = (
            f"{request.scheme}://{request.host}{request.path}"
            f"?uploadType=resumable&upload_id={session.id}"
        )
        return web.Response(
            status=200, headers={"Location": location, "X-GUploader-UploadID": session.id}
        )

    def _chunk_endpoint(self) -> Handler:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            self._controls.count("gmail.upload.chunk")
            try:
                return await self._chunk(request)
            except GmailFailure as failure:
                return errors.render(failure)

        return endpoint

    async def _chunk(self, request: web.Request) -> web.StreamResponse:
        # The session URL is its own credential, as in Google's resumable protocol: the PUTs
        # need no Authorization header (a client that sends one is not refused either).
        session = self._gmail.uploads.get(request.query.get("upload_id", ""))
        if session is None or session.operation not in self._methods:
            raise errors.not_found()
        room = uploads.MAX_MESSAGE_SIZE - len(session.received)
        body = await uploads.read_limited(request, room, uploads.MAX_MESSAGE_SIZE)
        chunk = uploads.chunk_range(request.headers.get("Content-Range"), len(body))
        total = chunk.total if chunk.total is not None else session.declared_length
        if total is not None and total > uploads.MAX_MESSAGE_SIZE:
            raise errors.too_large(uploads.MAX_MESSAGE_SIZE)
        if chunk.first is not None and chunk.last is not None:
            if chunk.last - chunk.first + 1 != len(body):
                raise errors.bad_request("Content-Range does not match the request's length.")
            held = len(session.received)
            # A chunk that overlaps what is held adds only its new tail; one that leaves a gap
            # adds nothing: either way the 308's Range tells the client where to resume.
            if chunk.first <= held <= chunk.last:
                session.received.extend(body[held - chunk.first :])
        if total is None or len(session.received) < total:
            return web.Response(status=308, headers=uploads.progress_headers(len(session.received)))
        del self._gmail.uploads[session.id]
        if len(session.received) > total:
            raise errors.bad_request("The upload is longer than its declared length.")
        method = self._methods[session.operation]
        caller = Caller(session.user, session.client_id)
        call = Call(caller, session.metadata, bytes(session.received), "resumable")
        return await self._run(request, method, call)

    # -- the methods (docs/providers.md D2) ----------------------------------------------------

    def _send_message(self, call: Call) -> Json:
        raw = _message(call.metadata, call.media)
        _require_recipient(raw)
        over_limit = self._admit_send(call.caller)
        raw = with_message_id(raw)
        message = self._gmail.store(
            call.caller.user,
            call.caller.client_id,
            raw,
            read_headers(raw),
            SENT,
            call.upload,
            _thread_id(call.metadata),
            over_limit,
        )
        return message.resource()

    def _create_draft(self, call: Call) -> Json:
        content = _object(call.metadata.get("message"))
        raw = with_message_id(_message(content, call.media))
        message = self._gmail.store(
            call.caller.user,
            call.caller.client_id,
            raw,
            read_headers(raw),
            DRAFT,
            call.upload,
            _thread_id(content),
        )
        draft = self._gmail.create_draft(message)
        return {"id": draft.id, "message": message.resource()}

    def _send_draft(self, call: Call) -> Json:
        identifier = call.metadata.get("id")
        if not isinstance(identifier, str) or not identifier:
            raise errors.invalid_argument(_NO_DRAFT_ID)
        draft = self._gmail.find_draft(call.caller.user, identifier)
        if draft is None:
            raise errors.not_found()
        stored = self._gmail.messages[draft.message_id]
        content = _object(call.metadata.get("message"))
        replacement = None
        if call.media is not None or content.get("raw"):
            replacement = with_message_id(_message(content, call.media))
        _require_recipient(replacement or stored.raw)
        stored.over_limit = self._admit_send(call.caller)
        if replacement is not None:
            _replace_content(stored, replacement, call.upload)
        return self._gmail.send_draft(draft).resource()

    def _admit_send(self, caller: Caller) -> bool:
        """Whether the message goes out over the daily limit; 429 once Google noticed it."""
        admission = self._gmail.admit_send(caller.user)
        if admission.refused_until is not None:
            self._controls.count("gmail.throttled.sending_limit")
            raise errors.sending_limit_exceeded(admission.refused_until)
        return admission.over_limit


def _object(value: object) -> Mapping[str, Any]:
    """A JSON object field (absent: empty); another type is 400."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.bad_request("Invalid JSON payload received. Expected an object.")
    return value


def _message(content: Mapping[str, Any], media: bytes | None) -> bytes:
    """The RFC 822 bytes: the upload's media, else the decoded ``raw``; 400 when neither."""
    if media is not None:
        raw = media
    elif content.get("raw"):
        try:
            raw = decode_raw(content["raw"])
        except MessageFormatError as problem:
            raise errors.invalid_argument(_BAD_RAW) from problem
    else:
        raise errors.invalid_argument(errors.MISSING_RAW)
    if len(raw) > uploads.MAX_MESSAGE_SIZE:
        raise errors.too_large(uploads.MAX_MESSAGE_SIZE)
    return raw


def _require_recipient(raw: bytes) -> None:
    """Gmail sends to the To/Cc/Bcc headers: a message without any is refused (D2)."""
    if not read_headers(raw).recipients:
        raise errors.invalid_argument("Recipient address required")


def _thread_id(content: Mapping[str, Any]) -> str | None:
    value = content.get("threadId")
    return value if isinstance(value, str) and value else None


def _replace_content(message: GmailMessage, raw: bytes, upload: str) -> None:
    """drafts.send with a ``message`` sends that content instead of the draft's."""
    message.raw = raw
    message.headers = read_headers(raw)
    message.upload = upload
