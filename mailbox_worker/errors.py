"""The one exception tree of mailbox-worker.

Every error we raise on purpose derives from ``MailboxWorkerError`` and carries a stable,
machine-readable ``code`` (used in API answers, job results and metric labels) and a human
``message``. Neither ever contains a secret (token, key, API key) nor message content.

    MailboxWorkerError
    ├── ConfigError                 a setting is wrong or missing; start-up stops, naming it
    ├── DeliveryError               the outcome of one provider call, as the queue must treat it
    │   ├── TransientError          the only thing retried (network, 5xx before processing, quota)
    │   │   ├── Throttled           the provider asked us to wait (429 / Retry-After)
    │   │   ├── DatabaseUnavailable our database cannot be reached; the API answers 503
    │   │   └── AccessTokenRejected the API refused the access token (401): refresh, then retry
    │   ├── PermanentError          retrying cannot help (bad recipient, too large, scope missing)
    │   ├── ReauthRequired          the grant is gone (invalid_grant, consent revoked): hold jobs
    │   └── OutcomeUnknown          the request may have reached the provider; never retried blindly
    ├── PolicyViolation             an operation our privacy rules forbid was attempted
    └── VaultError                  token storage problems; fail closed
        ├── KeyUnavailable          the key-encryption key named by a record is not available
        ├── DecryptionFailed        ciphertext, key or associated data do not match
        └── TokenRecordChanged      another writer stored the token record first; read it again

``TokenRecordChanged`` is an internal signal, never an answer: access-token refresh retries
it, and the API edge that can meet it translates it into ``Conflict``.

API-level problems (bad input, missing resource, conflict) are ``RequestError`` subclasses
with an HTTP status; the API turns them into JSON ``{"error": {"code", "message"}}``.

    MailboxWorkerError
    └── RequestError                answered to the client as a 4xx
        ├── InvalidRequest          400
        │   └── ValidationFailed    400, with ``details`` naming each field at fault
        ├── Unauthenticated         401
        ├── Forbidden               403
        ├── NotFound                404
        ├── RequestTimeout          408, the body did not arrive in time
        ├── Conflict                409
        ├── PayloadTooLarge         413
        ├── UnsupportedMediaType    415
        └── TooManyRequests         429, with ``retry_after`` (seconds) for ``Retry-After``
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence


class MailboxWorkerError(Exception):
    """Base of every error mailbox-worker raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(MailboxWorkerError):
    """A setting is missing or invalid. ``setting`` names it (e.g. ``database.url``)."""

    code = "config_invalid"

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"setting {setting!r}: {message}")
        self.setting = setting


class DeliveryError(MailboxWorkerError):
    """The outcome of a provider call, classified for the queue."""

    code = "delivery_error"

    def __init__(
        self, message: str, *, code: str | None = None, provider_status: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.provider_status = provider_status


class TransientError(DeliveryError):
    """Retry later. ``retry_after`` (seconds) is the provider's wish when it stated one."""

    code = "transient"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        provider_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, code=code, provider_status=provider_status)
        self.retry_after = retry_after


class Throttled(TransientError):
    """The provider throttled us; wait ``retry_after`` seconds. Never counts as a failure."""

    code = "throttled"


class DatabaseUnavailable(TransientError):
    """Our own database cannot be reached (refused, dropped or timed-out connections). The API
    answers ``503 database_unavailable`` with ``Retry-After``; background loops back off."""

    code = "database_unavailable"


class IdentityMisconfigured(TransientError):
    """The identity platform refuses our app itself (``invalid_client``: an expired secret,
    ``unauthorized_client``...): no mailbox is at fault and the operator must fix the
    configuration. Jobs wait ``retry_after`` seconds; like throttling, it never counts as a
    job failure (a job still ends at its deadline)."""

    code = "identity_misconfigured"


class AccessTokenRejected(TransientError):
    """The provider answered 401 to our access token; drop it, refresh, retry at once."""

    code = "access_token_rejected"


class PermanentError(DeliveryError):
    """Retrying cannot help; the job fails with ``code``."""

    code = "permanent"


class ReauthRequired(DeliveryError):
    """The mailbox's grant is no longer valid; the admin must connect it again."""

    code = "reauth_required"


class OutcomeUnknown(DeliveryError):
    """The request may have reached the provider and we cannot tell whether it took effect."""

    code = "outcome_unknown"


class PolicyViolation(MailboxWorkerError):
    """An operation forbidden by our privacy rules (e.g. a Gmail call outside the allow-list)."""

    code = "policy_violation"


class VaultError(MailboxWorkerError):
    """Token storage failed closed."""

    code = "vault_error"


class KeyUnavailable(VaultError):
    """The key-encryption key a record names is not available from the key source."""

    code = "key_unavailable"


class DecryptionFailed(VaultError):
    """Ciphertext, key and associated data do not match (tampering or a wrong key)."""

    code = "decryption_failed"


class TokenRecordChanged(VaultError):
    """A token record changed between our read and our write (a concurrent refresh or a
    concurrent rotation of the grant): nothing was stored; read the record again."""

    code = "token_conflict"


class RequestError(MailboxWorkerError):
    """A client request that cannot be served; answered as JSON with ``status``."""

    status: int = 400
    code = "invalid_request"


class InvalidRequest(RequestError):
    status = 400
    code = "invalid_request"


class Unauthenticated(RequestError):
    status = 401
    code = "unauthenticated"


class Forbidden(RequestError):
    status = 403
    code = "forbidden"


class NotFound(RequestError):
    status = 404
    code = "not_found"


class RequestTimeout(RequestError):
    """The request body did not arrive within ``server.body_timeout``."""

    status = 408
    code = "request_timeout"


class Conflict(RequestError):
    status = 409
    code = "conflict"


class PayloadTooLarge(RequestError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(RequestError):
    """The body is not ``application/json`` in UTF-8."""

    status = 415
    code = "unsupported_media_type"


class TooManyRequests(RequestError):
    """A rate limit refused the request (``rate_limited``, ``too_many_failed_attempts``);
    the client may try again after ``retry_after`` whole seconds (at least 1)."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, retry_after)


class ValidationFailed(InvalidRequest):
    """The body does not match the document; ``details`` name each field and its problem."""

    def __init__(
        self, message: str, details: Sequence[Mapping[str, str]], *, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.details = [dict(detail) for detail in details]


def redacted_traceback(error: BaseException) -> str:
    """The traceback of ``error`` and its causes; foreign exceptions' messages are left out."""
    lines: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__))
        if isinstance(current, MailboxWorkerError):
            summary = f"{type(current).__qualname__}: {current}"
        else:
            summary = f"{type(current).__module__}.{type(current).__qualname__} (message withheld)"
        lines.insert(0, f"{frames}{summary}")
        current = current.__cause__ or current.__context__
    return "\n-- which caused --\n".join(lines)
