"""Microsoft Graph v1.0 mail, under ``/v1.0`` (docs/providers.md B1-B5).

Every path exists as ``/v1.0/me/...`` and ``/v1.0/users/{id-or-upn}/...``:

* ``POST .../sendMail`` — JSON ``{"message":{...},"saveToSentItems":...}`` (names of any case)
  or ``text/plain`` base64 MIME → 202, empty; needs ``Mail.Send``;
* ``POST .../messages`` — create a draft (JSON or base64 MIME) → 201 + message; ``Mail.ReadWrite``;
* ``POST .../messages/{id}/send`` — send a draft → 202; ``Mail.Send``;
* ``DELETE .../messages/{id}`` — discard a draft → 204; ``Mail.ReadWrite``;
* ``POST .../revokeSignInSessions`` → 200; ``User.ReadWrite.All``, ``Directory.ReadWrite.All`` or
  ``User.RevokeSessions.All``;
* ``GET /me`` → the user; ``User.Read`` or broader (else 403 Authorization_RequestDenied);
* anything else under a user → 403 without the permission it would need, else 501
  (``graph_unsimulated``).

Checks, in order: a declared body above 4 MB (413), bearer token (401 + WWW-Authenticate),
mailbox (404), scope (403 ErrorAccessDenied), at most 4 concurrent requests per (client,
mailbox) (429 ApplicationThrottled + Retry-After) — a request holds its slot from here, before
its body is read, until its answer is written — then the body (413 if it proves longer), the
operation's latency (a ``latency`` rule, else the ``graph_latency`` setting), queued faults,
and the operation itself (400 ErrorMimeContentInvalidBase64String / ErrorInvalidRecipients,
403 ErrorSendAsDenied, 404 ErrorItemNotFound). Every call is counted as ``graph.<operation>``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..controls import Fault
from ..faults import client_hung_up, drop_connection, with_fault
from . import scopes as scope_rules
from .authorize import base_url
from .graph_attachments import AttachmentOperations, draft_of
from .graph_errors import (
    WWW_AUTHENTICATE,
    GraphFailure,
    answer_now,
    for_status,
    not_simulated,
    read_limited,
    render,
)
from .graph_messages import (
    MessageFormatError,
    ParsedMessage,
    decode_mime_upload,
    fold_names,
    graph_id,
    graph_time,
    header_block,
    invalid_recipient,
    is_address,
    message_resource,
    mime_from_json,
    parse,
)
from .graph_unsimulated import (
    DIRECTORY_DENIED,
    MAIL_DENIED,
    USER_READ,
    permission_for,
    user_resource,
)
from .state import (
    AccessToken,
    ConcurrencyRefusal,
    MicrosoftState,
    SlotHolder,
    StoredMessage,
    User,
)

REQUEST_BODY_LIMIT = 4 * 1024 * 1024
CONCURRENT_REQUESTS_PER_MAILBOX = 4

Operation = Callable[[web.Request, AccessToken, User, bytes], Awaitable[web.StreamResponse]]


class GraphEndpoints:
    """Handlers for the Graph mail operations."""

    def __init__(self, state: MicrosoftState) -> None:
        self._state = state
        self._attachments = AttachmentOperations(state)
        self._holders: dict[tuple[str, str], dict[int, _Holder]] = {}
        """The requests holding each (client, mailbox) pair's slots, by ``id(request)``."""

    def routes(self) -> list[web.RouteDef]:
        """The aiohttp routes these handlers serve (``/me`` and ``/users/{user}`` forms)."""
        table: list[tuple[str, str, Operation, frozenset[str]]] = [
            ("/sendMail", "graph.sendMail", self._send_mail, frozenset({scope_rules.MAIL_SEND})),
            (
                "/messages",
                "graph.createMessage",
                self._create_message,
                frozenset({scope_rules.MAIL_READ_WRITE}),
            ),
            (
                "/messages/{message_id}/send",
                "graph.sendDraft",
                self._send_draft,
                frozenset({scope_rules.MAIL_SEND}),
            ),
            (
                "/messages/{message_id}/attachments",
                "graph.addAttachment",
                self._attachments.add_attachment,
                frozenset({scope_rules.MAIL_READ_WRITE}),
            ),
            (
                "/messages/{message_id}/attachments/createUploadSession",
                "graph.createUploadSession",
                self._attachments.create_upload_session,
                frozenset({scope_rules.MAIL_READ_WRITE}),
            ),
            (
                "/revokeSignInSessions",
                "graph.revokeSignInSessions",
                self._revoke_sessions,
                scope_rules.REVOKE_SESSIONS,
            ),
        ]
        routes = self._attachments.routes()
        for suffix, operation, handler, needed in table:
            endpoint = self._endpoint(operation, handler, needed)
            routes.append(web.post(f"/v1.0/me{suffix}", endpoint))
            routes.append(web.post(f"/v1.0/users/{{user}}{suffix}", endpoint))
        delete = self._endpoint(
            "graph.deleteMessage", self._delete_draft, frozenset({scope_rules.MAIL_READ_WRITE})
        )
        get_user = self._endpoint(
            "graph.getUser", self._get_user, USER_READ, DIRECTORY_DENIED, any_user=True
        )
        for prefix in ("/v1.0/me", "/v1.0/users/{user}"):
            routes.append(web.delete(f"{prefix}/messages/{{message_id}}", delete))
            routes.append(web.get(prefix, get_user))
            # Last: whatever else a client asks of a user (graph_unsimulated).
            routes.append(web.route("*", prefix, self._unsimulated))
            routes.append(web.route("*", f"{prefix}/{{tail:.*}}", self._unsimulated))
        return routes

    def _endpoint(
        self,
        operation: str,
        handler: Operation,
        needed: frozenset[str],
        denied: GraphFailure = MAIL_DENIED,
        any_user: bool = False,
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """``handler`` behind the checks of the module docstring; ``needed``: any one of these
        permissions, else ``denied``; ``any_user``: the path may name another user, or one
        without a mailbox."""
        any_user = any_user or operation == "graph.revokeSignInSessions"

        async def endpoint(request: web.Request) -> web.StreamResponse:
            self._state.count(operation)
            if (request.content_length or 0) > REQUEST_BODY_LIMIT:
                raise _too_large()
            token = self._authenticate(request)
            user = self._mailbox(request, token, any_user)
            if not needed & scope_rules.canonical_set(token.scopes):
                raise denied
            # In flight from its arrival (before its body is read) until its answer is written.
            with self._slot(request, operation, token, user):
                try:
                    body = await self._body(request)
                    # with_fault waits for the operation's latency first (latency_for).
                    response = await with_fault(
                        request,
                        self._state,
                        (operation,),
                        lambda: handler(request, token, user, body),
                        lambda fault: self._fault_answer(request, fault),
                    )
                except GraphFailure as failure:
                    response = render(request, failure, self._state.clock.utcnow())
                except ConnectionResetError:  # the client hung up while sending its body
                    response = drop_connection(request)
                await answer_now(request, response)
            return response

        return endpoint

    @contextlib.contextmanager
    def _slot(
        self, request: web.Request, operation: str, token: AccessToken, user: User
    ) -> Iterator[None]:
        """Hold one of the (client, mailbox) pair's concurrent requests (docs/providers.md B5),
        or refuse with 429 ApplicationThrottled + Retry-After when all are taken (recording
        what held them: ``MicrosoftState.concurrency_refusals``)."""
        slot = (token.client_id, user.address.lower())
        holders = self._holders.setdefault(slot, {})
        if self._state.in_flight[slot] >= CONCURRENT_REQUESTS_PER_MAILBOX:
            self._state.count("graph.throttled.mailbox_concurrency")
            self._state.concurrency_refusals.append(_refusal(request, operation, slot, holders))
            raise GraphFailure(
                429,
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                {"Retry-After": str(self._state.throttle_retry_after)},
            )
        self._state.in_flight[slot] += 1
        try:
            holders[id(request)] = _Holder(request, operation, time.monotonic())
            self._state.note_concurrency(user.address)
            yield
        finally:
            holders.pop(id(request), None)
            if not holders:
                del self._holders[slot]
            self._state.in_flight[slot] -= 1
            if self._state.in_flight[slot] <= 0:
                del self._state.in_flight[slot]

    # -- checks ------------------------------------------------------------------------------

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        body = await read_limited(request, REQUEST_BODY_LIMIT)
        if body is None:
            raise _too_large()
        return body

    def _authenticate(self, request: web.Request) -> AccessToken:
        header = request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        value = value.strip()
        challenge = {"WWW-Authenticate": WWW_AUTHENTICATE}
        if scheme.lower() != "bearer" or not value:
            raise GraphFailure(
                401, "InvalidAuthenticationToken", "Access token is empty.", challenge
            )
        token = self._state.access_tokens.get(value)
        if token is None:
            message = (
                "Access token validation failure."
                if value.count(".") == 2
                else "CompactToken parsing failed with error code: 80049217"
            )
            raise GraphFailure(401, "InvalidAuthenticationToken", message, challenge)
        if token.expires_at <= self._state.now():
            raise GraphFailure(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
                challenge,
            )
        return token

    def _mailbox(self, request: web.Request, token: AccessToken, any_user: bool) -> User:
        """The mailbox the path names; delegated tokens reach only their own user's."""
        caller = self._state.user_by_object_id(token.object_id)
        named = request.match_info.get("user")
        user = caller if named is None else self._state.find_user(named)
        if user is None:
            raise GraphFailure(404, "ErrorInvalidUser", f"The requested user '{named}' is invalid.")
        if user is not caller and not any_user:
            raise GraphFailure(
                403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
            )
        if not user.mailbox_enabled and not any_user:
            raise GraphFailure(
                404,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )
        return user

    def _fault_answer(self, request: web.Request, fault: Fault) -> web.Response:
        headers = {}
        if fault.retry_after is not None:
            headers["Retry-After"] = str(fault.retry_after)
        elif fault.status == 429:
            headers["Retry-After"] = str(self._state.throttle_retry_after)
        return render(request, for_status(fault.status, headers), self._state.clock.utcnow())

    # -- message intake --------------------------------------------------------------------

    def _read_message(self, request: web.Request, user: User, body: bytes, wrapped: bool) -> bytes:
        """RFC 822 bytes from a base64 MIME or a JSON body (``wrapped``: under ``message``)."""
        try:
            if request.content_type == "text/plain":
                return _with_message_id(decode_mime_upload(body))
            if not body.strip():
                raise GraphFailure(400, "BadRequest", "Empty Payload. JSON content expected.")
            document = fold_names(json.loads(body))
            message = document.get("message") if wrapped else document
            if not isinstance(message, dict):
                raise GraphFailure(
                    400, "ErrorInvalidParameter", "The value of the parameter 'Message' is empty."
                )
            return mime_from_json(message, user.address, user.display_name)
        except MessageFormatError as problem:
            raise GraphFailure(400, problem.code, problem.message) from problem
        except (ValueError, AttributeError) as problem:
            raise GraphFailure(
                400,
                "BadRequest",
                "Unable to read JSON request payload. Please ensure Content-Type header is set "
                "and payload is of valid JSON format.",
            ) from problem

    def _check_sendable(self, user: User, parsed: ParsedMessage, size: int) -> None:
        if parsed.sender and parsed.sender.lower() != user.address.lower():
            raise GraphFailure(
                403,
                "ErrorSendAsDenied",
                "The user account which was used to submit this request does not have the right "
                "to send mail on behalf of the specified sending account. Cannot submit message.",
            )
        for address in (*parsed.to, *parsed.cc, *parsed.bcc):
            if not is_address(address):
                problem = invalid_recipient(address)
                raise GraphFailure(400, problem.code, problem.message)
        if not (parsed.to or parsed.cc or parsed.bcc):
            raise GraphFailure(
                400,
                "ErrorInvalidRecipients",
                "At least one recipient isn't valid., A message can't be sent because it "
                "contains no recipients.",
            )
        if size > self._state.message_size_limit:
            raise GraphFailure(
                400,
                "ErrorMessageSizeExceeded",
                "The message exceeds the maximum supported size.",
            )

    def _store(
        self, token: AccessToken, user: User, raw: bytes, parsed: ParsedMessage, folder: str
    ) -> StoredMessage:
        stored = StoredMessage(
            id=graph_id(),
            mailbox=user.address,
            folder="drafts" if folder == "drafts" else "sent",
            internet_message_id=parsed.message_id or "",
            conversation_id=graph_id("AAQkA")[:80],
            subject=parsed.subject,
            sender=parsed.sender or user.address,
            to=parsed.to,
            cc=parsed.cc,
            bcc=parsed.bcc,
            created_at=graph_time(self._state.clock.utcnow()),
            raw=raw,
            client_id=token.client_id,
        )
        self._state.store_message(stored)
        return stored

    # -- operations ------------------------------------------------------------------------

    async def _send_mail(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        raw = self._read_message(request, user, body, wrapped=True)
        parsed = parse(raw, headers_only=True)
        self._check_sendable(user, parsed, len(raw))
        # Delivered mail is recorded in folder "sent" even with saveToSentItems=false: the
        # inspection API lists what Graph accepted for delivery.
        self._store(token, user, raw, parsed, "sent")
        return web.Response(status=202)

    async def _create_message(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        raw = self._read_message(request, user, body, wrapped=False)
        parsed = parse(raw)
        stored = self._store(token, user, raw, parsed, "drafts")
        resource = message_resource(
            stored, base_url(request), user.object_id, user.display_name, parsed
        )
        return web.json_response(resource, status=201)

    async def _send_draft(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        # After sending, Exchange moves the item and its draft id no longer resolves.
        stored = draft_of(self._state, request.match_info["message_id"], user)
        self._check_sendable(user, parse(stored.raw, headers_only=True), len(stored.raw))
        stored.folder = "sent"
        return web.Response(status=202)

    async def _delete_draft(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        # Only drafts are kept as deletable items: what was sent stays on record (*chosen*).
        stored = draft_of(self._state, request.match_info["message_id"], user)
        self._state.delete_message(stored.id)
        return web.Response(status=204)

    async def _get_user(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        return web.json_response(user_resource(user, base_url(request)))

    async def _unsimulated(self, request: web.Request) -> web.StreamResponse:
        """Any other call under a user: Graph's 403 without the permission it needs, else
        501 NotImplemented (graph_unsimulated)."""
        self._state.count("graph.unsimulated")
        token = self._authenticate(request)
        self._mailbox(request, token, any_user=True)
        rule = permission_for(request.method, request.match_info.get("tail", ""))
        if rule is not None and not rule[0] & scope_rules.canonical_set(token.scopes):
            raise rule[1]
        raise not_simulated(request)

    async def _revoke_sessions(
        self, request: web.Request, token: AccessToken, user: User, body: bytes
    ) -> web.StreamResponse:
        self._state.revoke_sign_in_sessions(user)
        document: dict[str, Any] = {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Edm.Boolean",
            "value": True,
        }
        return web.json_response(document)


def _too_large() -> GraphFailure:
    return GraphFailure(
        413, "RequestEntityTooLarge", "The maximum request length supported is 4MB."
    )


def _with_message_id(raw: bytes) -> bytes:
    """Exchange gives a message without a Message-ID one of its own."""
    head = header_block(raw).lower()
    if b"\nmessage-id:" in b"\n" + head:
        return raw
    domain = "sandbox.prod.outlook.com"
    identifier = f"<{graph_id('')[:40].replace('-', '').replace('_', '')}@{domain}>"
    newline = b"\r\n" if b"\r\n" in raw[:2000] else b"\n"
    return b"Message-ID: " + identifier.encode("ascii") + newline + raw


@dataclass
class _Holder:
    """A request holding one of its mailbox's slots."""

    request: web.Request
    operation: str
    since: float  # time.monotonic() at its arrival
    excused: bool = False
    """Its client had hung up when a refusal was recorded, and that refusal was put down to
    it (``ConcurrencyRefusal.excused_by``): one abandoned request excuses one refusal."""


def _refusal(
    request: web.Request,
    operation: str,
    slot: tuple[str, str],
    holders: dict[int, _Holder],
) -> ConcurrencyRefusal:
    """The record of ``request`` refused as over its mailbox's limit, with its slots' holders;
    the first holder whose client had hung up and that excused no refusal yet excuses it."""
    now = time.monotonic()
    seen = []
    excused_by = None
    for holder in holders.values():
        hung_up = client_hung_up(holder.request)
        crid = holder.request.headers.get("client-request-id")
        if hung_up and not holder.excused and excused_by is None:
            holder.excused = True
            excused_by = crid or "(no client-request-id)"
        seen.append(
            SlotHolder(
                operation=holder.operation,
                client_request_id=crid,
                held_seconds=round(now - holder.since, 3),
                client_hung_up=hung_up,
            )
        )
    return ConcurrencyRefusal(
        mailbox=slot[1],
        operation=operation,
        client_request_id=request.headers.get("client-request-id"),
        holders=tuple(seen),
        excused_by=excused_by,
    )
