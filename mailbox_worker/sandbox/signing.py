"""The key that signs id_tokens, for both providers, and the JWT encoding helpers.

id_tokens are real RS256 JWTs signed with a key generated when the sandbox starts and published
at the ``jwks_uri`` of each provider's discovery document. The other token values have each
provider's own shape (``microsoft.token_values``, ``google.state``). None may ever be logged.
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


def json_part(value: dict[str, Any]) -> str:
    """A JWT part: compact JSON, base64url-encoded."""
    return base64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


class SigningKey:
    """An RSA key that signs id_tokens; ``jwks()`` is its public half."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = base64url(secrets.token_bytes(16))

    def sign(self, claims: dict[str, Any]) -> str:
        """An RS256 JWT carrying ``claims``."""
        header = {"typ": "JWT", "alg": "RS256", "kid": self.key_id}
        signing_input = f"{json_part(header)}.{json_part(claims)}"
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
