"""What both providers' token endpoints do alike: read the form, authenticate the client, check
the PKCE verifier. Each provider words the refusals itself.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import unquote_plus

from aiohttp import web

from .clients import Client
from .controls import SandboxControls
from .signing import base64url


async def read_token_form(
    request: web.Request, controls: SandboxControls, counter: str
) -> tuple[dict[str, str], str]:
    """A token request's form fields and grant type, counted as ``counter`` and as
    ``counter.<grant_type>``."""
    form = await request.post()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    grant_type = fields.get("grant_type", "")
    controls.count(counter)
    if grant_type:
        controls.count(f"{counter}.{grant_type}")
    return fields, grant_type


class ClientRefusal(enum.Enum):
    """Why a token request's client was not authenticated, in the order the checks run."""

    UNDECODABLE_BASIC = "undecodable_basic"
    MISSING_CLIENT_ID = "missing_client_id"
    UNKNOWN_CLIENT = "unknown_client"
    MISSING_SECRET = "missing_secret"
    WRONG_SECRET = "wrong_secret"


class ClientRefused(Exception):
    """Raised by ``authenticate_client``; ``client_id`` as the request named it (may be empty)."""

    def __init__(self, reason: ClientRefusal, client_id: str) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.client_id = client_id


def authenticate_client(
    request: web.Request, fields: Mapping[str, str], clients: Mapping[str, Client]
) -> Client:
    """The calling client; secret from the form or HTTP Basic (RFC 6749 2.3.1; a client_id in
    the form wins over the Basic one). Public clients need no secret. Raises ``ClientRefused``."""
    client_id, secret = fields.get("client_id", ""), fields.get("client_secret")
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(authorization[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as problem:
            raise ClientRefused(ClientRefusal.UNDECODABLE_BASIC, client_id) from problem
        basic_id, _, basic_secret = decoded.partition(":")
        client_id = client_id or unquote_plus(basic_id)
        secret = unquote_plus(basic_secret)
    if not client_id:
        raise ClientRefused(ClientRefusal.MISSING_CLIENT_ID, client_id)
    client = clients.get(client_id)
    if client is None:
        raise ClientRefused(ClientRefusal.UNKNOWN_CLIENT, client_id)
    if client.client_secret is not None:
        if not secret:
            raise ClientRefused(ClientRefusal.MISSING_SECRET, client_id)
        if not hmac.compare_digest(secret.encode(), client.client_secret.encode()):
            raise ClientRefused(ClientRefusal.WRONG_SECRET, client_id)
    return client


def verifier_matches(verifier: str, challenge: str, method: str) -> bool:
    """True when the PKCE ``verifier`` produces ``challenge`` by ``method`` (``S256`` or
    ``plain``), compared in constant time."""
    return hmac.compare_digest(_challenge_of(verifier, method), challenge)


def _challenge_of(verifier: str, method: str) -> str:
    if method == "S256":
        return base64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
    return verifier
