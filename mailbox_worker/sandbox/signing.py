"""Token material: signed id_tokens, JWT-shaped access tokens, opaque refresh tokens and codes.

id_tokens are real RS256 JWTs signed with a key generated when the sandbox starts and published
at the ``jwks_uri`` of the discovery document. Access tokens have the shape of Graph's (a JWT whose
header carries a ``nonce``, which makes them unverifiable by anyone but Graph, as for the real
ones); their signature part is random, and Graph accepts them only by looking them up in the
sandbox state. Refresh tokens and authorization codes are opaque random strings in the shape of
Entra's (``1.AQ…``). None of these values may ever be logged.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa


def base64url(data: bytes) -> str:
    """Unpadded base64url text, as JWTs use."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_part(value: dict[str, Any]) -> str:
    return base64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class SigningKey:
    """An RSA key that signs id_tokens; ``jwks()`` is its public half."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = base64url(secrets.token_bytes(16))

    def sign(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT carrying ``claims``."""
        header = {"typ": "JWT", "alg": "RS256", "kid": self.key_id}
        signing_input = f"{_json_part(header)}.{_json_part(claims)}"
        signature = self._key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{base64url(signature)}"

    def jwks(self) -> dict[str, Any]:
        """The JSON Web Key Set a client would use to verify id_tokens."""
        numbers = self._key.public_key().public_numbers()
        modulus = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        exponent = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "use": "sig",
                    "kid": self.key_id,
                    "x5t": self.key_id,
                    "n": base64url(modulus),
                    "e": base64url(exponent),
                }
            ]
        }


def access_token(claims: dict[str, Any]) -> str:
    """A Graph-shaped access token: JWT header with a nonce, real claims, random signature."""
    header = {
        "typ": "JWT",
        "nonce": base64url(secrets.token_bytes(32)),
        "alg": "RS256",
        "x5t": "sandbox",
        "kid": "sandbox",
    }
    return f"{_json_part(header)}.{_json_part(claims)}.{secrets.token_urlsafe(256)}"


def refresh_token() -> str:
    """An opaque refresh token shaped like Entra's."""
    return "1.AQ" + secrets.token_urlsafe(600)


def authorization_code() -> str:
    """An opaque authorization code shaped like Entra's."""
    return "1.AQ" + secrets.token_urlsafe(400)


def client_info(object_id: str, tenant_id: str) -> str:
    """The ``client_info`` value msal turns into ``home_account_id`` = ``uid.utid``."""
    return _json_part({"uid": object_id, "utid": tenant_id})
