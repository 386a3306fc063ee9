"""Reading what a request carries: its JSON body and its ``Idempotency-Key``.

Each step has its own answer, in this order: a body of another media type → 415
``unsupported_media_type``; a body over ``max_request_bytes`` → 413 ``payload_too_large``
(aiohttp's ``HTTPRequestEntityTooLarge``, raised by ``read_body`` while reading); a body not
received within ``body_timeout`` → 408 ``request_timeout``; bytes that are not UTF-8 I-JSON →
400 ``invalid_json``; JSON that does not match the document → 400 with details (see
``document``). A client that hangs up while sending is aiohttp's ``ConnectionResetError``, left
to the error middleware (499).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from aiohttp import web

from mailbox_worker import lanes
from mailbox_worker.api.context import document, services
from mailbox_worker.api.document import schema_pointer
from mailbox_worker.api.errors import client_gone
from mailbox_worker.errors import (
    InvalidRequest,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
)
from mailbox_worker.jobs.mime import ADDRESS_FIELDS
from mailbox_worker.policy import slow_steps
from mailbox_worker.policy.domains import spellings_kept
from mailbox_worker.policy.slow_steps import (
    ADDRESSES_ON_THE_LOOP,
    BYTES_PARSED_ON_THE_LOOP,
    SlowWorkDeferred,
)

JSON_MEDIA_TYPE = "application/json"
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_SCHEMA = "/components/parameters/IdempotencyKey/schema"
# Code points json.loads leaves in a string only when a \uXXXX escape was unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")
# The only text from which json.loads makes a surrogate code point at all: a \uD800-\uDFFF
# escape (UTF-8 cannot carry one; the decoder refuses it). Its absence, one search in C over
# the text, spares the walk of every parsed string (docs/performance.md, "The enqueue
# request"); its presence (an emoji a client escaped, or an unpaired half) calls the walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
BODY_BYTES = web.RequestKey("body_bytes", int)
"""The bytes of the request's body, once ``read_body`` has read it."""
Body = TypeVar("Body")
Checked = TypeVar("Checked")


async def read_json(
    request: web.Request,
    schema: str,
    *,
    optional: bool = False,
    spellings: dict[str, str] | None = None,
) -> Any:
    """The body, validated against the component schema named ``schema``.

    With ``optional``, a request without a body reads as ``{}``. ``spellings`` receives the
    ASCII forms of the internationalised domains the checks spelled (``spellings_kept``), for
    the work that follows to use rather than encode them again."""
    if optional and not request.body_exists:
        return {}
    pointer = schema_pointer(schema)
    checker = document(request)
    body, _ = await _read_checked(
        request, pointer, lambda body: checker.validate(pointer, body), None, spellings
    )
    return body


async def read_json_items(
    request: web.Request, schema: str, field: str, *, spellings: dict[str, str] | None = None
) -> tuple[Any, dict[int, ValidationFailed]]:
    """The body, validated against the component schema named ``schema`` except the items
    of its array ``field``, which fail on their own: ``(body, {index: failure})``.
    ``spellings`` as for ``read_json``."""
    pointer = schema_pointer(schema)
    checker = document(request)
    no_failures: dict[int, ValidationFailed] = {}
    return await _read_checked(
        request,
        pointer,
        lambda body: checker.validate_items(pointer, body, field),
        no_failures,
        spellings,
    )


async def _read_checked(
    request: web.Request,
    pointer: str,
    check: Callable[[Any], Checked],
    accepted: Checked,
    spellings: dict[str, str] | None,
) -> tuple[Any, Checked]:
    """The body parsed, and what ``check`` answered of it (``accepted`` where the schema at
    ``pointer`` accepts it).

    Nothing that could hold the event loop for long, which every other request, the worker's
    leases and the health checks would wait for, runs on it. The body is parsed and accepted
    on the loop by the compiled validator within a budget of slow steps (``slow_steps``: a
    new internationalised domain, an address outside the common form); one that spends it is
    checked again in a thread of its own, and one the validator refuses is explained there
    (each failure named, by jsonschema, pure Python: one bad item among 500 plain invoices took
    184 ms, against 13 ms to accept). A body with more than ``ADDRESSES_ON_THE_LOOP`` addresses
    is checked there from the start: each address costs a few µs to check however common its
    form. A body of more than ``BYTES_PARSED_ON_THE_LOOP`` is parsed there too, and checked in
    the same turn: the parser's check of each float is Python, during which the thread gives
    the loop its turns (7.6 MB of floats held the loop for 276 to 511 ms parsed on it). While
    it reads strings, lists and objects the parser holds the interpreter's lock, in a thread as
    on the loop (193 ms for 12 MB of addresses); no place is better for those. Both keep the
    domains they spelled in ``spellings``."""
    if request.content_type != JSON_MEDIA_TYPE or (request.charset or "utf-8").lower() != "utf-8":
        raise UnsupportedMediaType(f"the body must be {JSON_MEDIA_TYPE} (UTF-8)")
    raw = await within_body_timeout(request, read_body(request))
    kept = {} if spellings is None else spellings

    def explain(body: Any) -> Checked:
        with spellings_kept(kept):
            try:
                return check(body)
            except RecursionError:  # jsonschema compares nested items recursively
                _invalid_json("the body is nested too deeply")

    def accept_or_explain(body: Any) -> Checked:
        with spellings_kept(kept):
            if document(request).accepts(pointer, body):
                return accepted
        return explain(body)

    if len(raw) > BYTES_PARSED_ON_THE_LOOP:

        def parse_and_check() -> tuple[Any, Checked]:
            body = parse_json(raw)
            return body, accept_or_explain(body)

        return await _beside_the_loop(request, parse_and_check, len(raw))
    body = parse_json(raw)
    if _addresses_in(body) > ADDRESSES_ON_THE_LOOP:
        return body, await _beside_the_loop(request, lambda: accept_or_explain(body), len(raw))
    try:
        with spellings_kept(kept), slow_steps.within_budget():
            if document(request).accepts(pointer, body):
                return body, accepted
    except SlowWorkDeferred:
        pass
    return body, await _beside_the_loop(request, lambda: explain(body), len(raw))


def _addresses_in(body: Any) -> int:
    """How many addresses the parsed ``body`` holds where the document checks addresses: the
    message's lists and its sender, of a job request or of each item of a batch (the only
    places of an ``email`` format but a mailbox's ``login_hint``). Errs on the side of
    counting: any list there counts its length, whatever it holds, and a batch of more items
    than ``ADDRESSES_ON_THE_LOOP`` counts one a item without a look at them (the schema allows
    1,000; a 16 MB body holds millions of empty ones). Counted until past the limit: a few µs
    a request, where a search of the raw bytes for the ``"address"`` key cost about 1 ms a MB
    of body (docs/performance.md, "Eighteenth pass")."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        items = []
    if len(items) > ADDRESSES_ON_THE_LOOP:
        return len(items)
    count = 0
    for each in itertools.chain((body,), items):
        message = each.get("message") if isinstance(each, dict) else None
        if isinstance(message, dict):
            count += 1  # its sender, if any
            for field in ADDRESS_FIELDS:
                if isinstance(listed := message.get(field), list):
                    count += len(listed)
            if count > ADDRESSES_ON_THE_LOOP:
                break
    return count


async def _beside_the_loop(request: web.Request, work: Callable[[], Checked], size: int) -> Checked:
    """``work()`` for ``request``, which holds ``size`` bytes of body, in the costly checks'
    lane (``lanes.CHECKS``). A full lane raises ``LaneFull`` (``503 server_busy``); a client
    that hung up before the work's turn, ``WorkAbandoned`` (499), its work not done."""
    return await lanes.CHECKS.run(work, size=size, wanted=client_present(request))


def body_bytes(request: web.Request) -> int:
    """The bytes of the request's body read so far by ``read_body`` (0 before)."""
    size: int = request.get(BODY_BYTES, 0)
    return size


def client_present(request: web.Request) -> Callable[[], bool]:
    """Whether ``request``'s client is still connected, for a lane's ``wanted``: work for
    one that hung up is not done. It only reads, so the lane's thread may ask it."""
    return lambda: not client_gone(request)


async def read_body(request: web.Request) -> bytes:
    """The request's body, whole: what ``request.read()`` returns, without its two copies (it
    gathers the chunks in a ``bytearray``, then copies that into ``bytes``). Here the chunks
    are joined once, and a body that arrived in one is not copied at all: for a batch of 500
    invoices, 7 MB less to copy and to fault in (docs/performance.md "Twelfth pass"). Past
    ``max_request_bytes`` (the application's ``client_max_size``), aiohttp's 413, as its own
    reading raises it. The stream is consumed: the body is read once, here."""
    limit = services(request).max_request_bytes
    stream = request.content
    stream.set_read_chunk_size(limit)  # as aiohttp's read(): large bodies in large chunks
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.readany():
        size += len(chunk)
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        chunks.append(chunk)
    request[BODY_BYTES] = size
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def within_body_timeout(request: web.Request, reading: Awaitable[Body]) -> Body:
    """``reading`` (of the request's body), or 408 ``request_timeout`` once the server's
    ``body_timeout`` has passed: a client trickling its body does not hold a handler."""
    limit = services(request).body_timeout
    try:
        async with asyncio.timeout(limit):
            return await reading
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {limit:g} seconds") from None


def parse_json(raw: bytes) -> Any:
    """Strict JSON (RFC 8259 in UTF-8, a leading BOM ignored; no NaN/Infinity, no number
    beyond the double range, no unpaired surrogates) or 400."""
    if not raw.strip():
        _invalid_json("the body is empty; a JSON object is expected")
    try:
        # RFC 8259 8.1 lets a parser ignore a byte order mark; some .NET clients send one.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        _invalid_json("the body is not UTF-8")
    try:
        body = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError:
        _invalid_json("the body is nested too deeply")
    except ValueError as error:
        # The position only: the parser's message may quote the body.
        position = getattr(error, "pos", None)
        where = f" at character {position}" if isinstance(position, int) else ""
        _invalid_json(f"the body is not valid JSON{where}")
    # A surrogate can only come from an escape: without a backslash (an invoice's body
    # rarely has one; its base64 never) the text is not searched at all.
    if "\\" in text and _SURROGATE_ESCAPE.search(text) and _has_unpaired_surrogate(body):
        _invalid_json("the body contains an unpaired UTF-16 surrogate escape")
    return body


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite(literal: str) -> float:
    """A JSON number with a fraction or exponent, as a float; one beyond the double range
    (``1e400``, which would read as infinity) is refused, as I-JSON (RFC 7493) asks: no
    validator need judge an infinity."""
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError("a number beyond the double range")
    return value


def _invalid_json(message: str) -> NoReturn:
    raise InvalidRequest(message, code="invalid_json")


def _has_unpaired_surrogate(value: Any) -> bool:
    pending = [value]
    while pending:  # iterative: the depth is the client's to choose
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def idempotency_key(request: web.Request) -> str | None:
    """The ``Idempotency-Key`` header when sent, checked against the document."""
    values = request.headers.getall(IDEMPOTENCY_KEY_HEADER, [])
    if not values:
        return None
    message = "Idempotency-Key must be 1 to 200 printable ASCII characters, sent once"
    if len(values) > 1:
        raise InvalidRequest(message, code="invalid_idempotency_key")
    try:
        document(request).validate(IDEMPOTENCY_KEY_SCHEMA, values[0])
    except InvalidRequest:
        raise InvalidRequest(message, code="invalid_idempotency_key") from None
    return values[0]
