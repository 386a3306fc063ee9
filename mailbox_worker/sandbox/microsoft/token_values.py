"""Entra-shaped token values: Graph access tokens, refresh tokens, codes and ``client_info``.

Access tokens have the shape of Graph's (a JWT whose header carries a ``nonce``, which makes them
unverifiable by anyone but Graph, as for the real ones); their signature part is random, and
Graph accepts them only by looking them up in the sandbox state. Refresh tokens and authorization
codes are opaque random strings in the shape of Entra's (``1.AQ…``). None of these values may
ever be logged.
"""

from __future__ import annotations

import secrets
from typing import Any

from ..signing import base64url, json_part


def access_token(claims: dict[str, Any]) -> str:
    """A Graph-shaped access token: JWT header with a nonce, real claims, random signature."""
    header = {
        "typ": "JWT",
        "nonce": base64url(secrets.token_bytes(32)),
        "alg": "RS256",
        "x5t": "sandbox",
        "kid": "sandbox",
    }
    return f"{json_part(header)}.{json_part(claims)}.{secrets.token_urlsafe(256)}"


def refresh_token() -> str:
    """An opaque refresh token shaped like Entra's."""
    return "1.AQ" + secrets.token_urlsafe(600)


def authorization_code() -> str:
    """An opaque authorization code shaped like Entra's."""
    return "1.AQ" + secrets.token_urlsafe(400)


def client_info(object_id: str, tenant_id: str) -> str:
    """The ``client_info`` value msal turns into ``home_account_id`` = ``uid.utid``."""
    return json_part({"uid": object_id, "utid": tenant_id})
