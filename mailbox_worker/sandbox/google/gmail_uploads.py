"""Reading Gmail request bodies: JSON metadata, and the three upload types (docs/providers.md D3).

* metadata path (``/gmail/v1/…``): a JSON body, the message in ``raw`` (base64url);
* ``uploadType=media``: the body is the message itself, ``Content-Type: message/*``;
* ``uploadType=multipart``: ``multipart/related``, a JSON part then a ``message/*`` part;
* ``uploadType=resumable``: a POST with the JSON metadata and ``X-Upload-Content-Type`` /
  ``X-Upload-Content-Length`` opens a session; the bytes come in PUTs carrying
  ``Content-Range: bytes first-last/total`` (``total`` may be ``*`` until the last chunk;
  ``bytes */total`` asks for the progress). A chunk that leaves bytes to come is answered
  ``308`` with ``Range: bytes=0-n`` (no ``Range`` before the first byte), the last one with
  the method's answer.

Every reader stops at its limit and raises ``too_large`` (413) instead of buffering more.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from . import gmail_errors as errors

MAX_MESSAGE_SIZE = 36_700_160  # mediaUpload.maxSize of send and drafts (docs/providers.md D1)
# Room for a multipart body's JSON part and boundaries, or the JSON around a base64 ``raw``.
_ENVELOPE = 1024 * 1024
MAX_METADATA_BODY = 4 * -(-MAX_MESSAGE_SIZE // 3) + _ENVELOPE
MAX_MULTIPART_BODY = MAX_MESSAGE_SIZE + _ENVELOPE
UPLOAD_TYPES = ("media", "multipart", "resumable")
# Google's text when an /upload/ URL lacks a usable uploadType (a best guess).
_NO_UPLOAD_TYPE = (
    "Upload requests must include an uploadType URL parameter and a URL path beginning "
    "with /upload/"
)
_RANGE = re.compile(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)")


@dataclass(frozen=True)
class ChunkRange:
    """A parsed ``Content-Range``: ``first`` is None for a progress query."""

    first: int | None
    last: int | None
    total: int | None


async def read_limited(request: web.Request, limit: int, too_large_at: int) -> bytes:
    """The whole body; 413 naming ``too_large_at`` as soon as it exceeds ``limit`` bytes."""
    if (request.content_length or 0) > limit:
        raise errors.too_large(too_large_at)
    body = bytearray()
    while True:
        piece = await request.content.read(min(1 << 20, limit + 1 - len(body)))
        if not piece:
            return bytes(body)
        body.extend(piece)
        if len(body) > limit:
            raise errors.too_large(too_large_at)


def upload_type(request: web.Request) -> str:
    """``uploadType`` of an ``/upload/`` or ``/resumable/upload/`` request (400 if unusable)."""
    value = request.query.get("uploadType", "")
    if request.path.startswith("/resumable/") and value in ("", "resumable"):
        return "resumable"
    if value not in UPLOAD_TYPES:
        raise errors.bad_request(_NO_UPLOAD_TYPE)
    return value


def json_metadata(body: bytes) -> dict[str, Any]:
    """A JSON object body (empty means ``{}``); anything else is 400 ``badRequest``."""
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as problem:
        raise errors.bad_request("Invalid JSON payload received.") from problem
    if not isinstance(document, dict):
        raise errors.bad_request("Invalid JSON payload received. Expected an object.")
    return document


def check_media_type(media_type: str) -> None:
    """Send and drafts accept ``message/*`` (``mediaUpload.accept``, docs/providers.md D1)."""
    if not media_type.lower().startswith("message/"):
        raise errors.bad_request(
            f"Media type '{media_type}' is not supported. Valid media types: [message/*]"
        )


def split_related(body: bytes, content_type: str) -> tuple[dict[str, Any], bytes]:
    """The JSON metadata and the media of a ``multipart/related`` body, bytes untouched.

    A part ends at the line break before the next delimiter (RFC 2046); google-api-python-client
    writes LF line breaks around its parts, other clients CRLF: both are read.
    """
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.lower().startswith("multipart/related") or match is None:
        raise errors.bad_request("Invalid multipart request with 0 mime parts.")
    delimiter = b"--" + match.group(1).encode("latin-1")
    pieces = body.split(b"\n" + delimiter)
    # pieces[0] holds the opening delimiter; the last piece starts with "--" (the close).
    candidates = [_part(piece) for piece in [pieces[0].split(delimiter, 1)[-1], *pieces[1:]]]
    parts = [part for part in candidates if part is not None]
    if len(parts) != 2:
        raise errors.bad_request(f"Invalid multipart request with {len(parts)} mime parts.")
    (_, metadata), (media_type, media) = parts
    check_media_type(media_type)
    return json_metadata(metadata), media


def _part(piece: bytes) -> tuple[str, bytes] | None:
    """(content type, content) of one part; None for the closing delimiter's remainder."""
    if piece.startswith(b"--"):
        return None
    piece = piece[2:] if piece.startswith(b"\r\n") else piece.removeprefix(b"\n")
    piece = piece.removesuffix(b"\r")  # the CR of a CRLF before the next delimiter
    head, separator, content = piece.partition(b"\r\n\r\n")
    if not separator or b"\n\n" in head:
        head, _, content = piece.partition(b"\n\n")
    media_type = "application/json"
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            media_type = value.strip().split(";")[0]
    return media_type, content


def chunk_range(header: str | None, length: int) -> ChunkRange:
    """The ``Content-Range`` of a resumable PUT; a body without one is the whole upload."""
    if header is None:
        return ChunkRange(0, length - 1, length) if length else ChunkRange(None, None, None)
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        raise errors.bad_request(f"Failed to parse Content-Range header: {header}")
    first, last, total = match.groups()
    return ChunkRange(
        None if first is None else int(first),
        None if last is None else int(last),
        None if total == "*" else int(total),
    )


def progress_headers(received: int) -> dict[str, str]:
    """The ``Range`` a 308 carries: what the server holds (nothing yet: no ``Range``)."""
    return {"Range": f"bytes=0-{received - 1}"} if received else {}
