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

Every stable code is listed once, with its meaning and whether retrying can help, at the end
of this module: ``API_ERROR_CODES``, ``JOB_CODES``, ``MAILBOX_REASONS``, ``INTERNAL_CODES``.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


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


# -- the registry of stable codes -------------------------------------------------------------
#
# Every code a client can meet, with what it means and whether retrying can help. The API
# document lists the same sets as enums (``Error.code``, ``JobError.code``, the mailbox's
# ``state_reason``); ``tests/unit/test_error_codes.py`` fails when the document and these
# tables differ, or when the code raises a code that no table lists.


@dataclass(frozen=True)
class CodeMeaning:
    """``meaning`` for people; ``retryable``: whether trying again later, unchanged, can help."""

    meaning: str
    retryable: bool


def _codes(**entries: tuple[str, bool]) -> Mapping[str, CodeMeaning]:
    return {code: CodeMeaning(meaning, retryable) for code, (meaning, retryable) in entries.items()}


API_ERROR_CODES: Mapping[str, CodeMeaning] = _codes(
    # 400
    invalid_request=("the body does not match the document; `details` name each field", False),
    invalid_json=("the body is not a JSON object in UTF-8", False),
    bad_request=("the request could not be read", False),
    malformed_request=("the request is not valid HTTP/1.1 (answered by the server itself)", False),
    invalid_address=("an e-mail address is not valid", False),
    missing_body=("the message has neither a text nor an html body", False),
    invalid_attachment=("an attachment's content is not standard base64", False),
    invalid_idempotency_key=("the Idempotency-Key header is malformed or sent twice", False),
    invalid_deadline=("the deadline is not a future date-time with an offset", False),
    invalid_send_at=("send_at is not a future date-time before the deadline", False),
    capability_missing=("the mailbox was connected without the job's mode", False),
    from_mismatch=("message.from is not the mailbox's own address", False),
    invalid_capabilities=("the capabilities are not offered for the provider", False),
    invalid_message=("the message cannot be built (e.g. an unusable header)", False),
    invalid_origin=("a return origin is not an https origin without a path", False),
    invalid_limits=("a mailbox limit is out of range", False),
    invalid_support_grant=("the support grant's hours or reason are out of range", False),
    # 401, 403, 404, 405
    unauthenticated=("the API key is missing, malformed, unknown or revoked", False),
    forbidden=("the API key lacks the permission the message names", False),
    not_found=("no such route or resource", False),
    job_not_found=("no such job in the caller's account", False),
    mailbox_not_found=("no such mailbox in the caller's account", False),
    account_not_found=("the caller's account no longer exists", False),
    method_not_allowed=(
        "the route does not accept this method; `Allow` lists those it does",
        False,
    ),
    # 408, 409
    request_timeout=("the request head or body did not arrive in time", True),
    conflict=("the resource's state forbids the operation", False),
    idempotency_key_reused=("the Idempotency-Key was used for another request body", False),
    mailbox_not_connected=("the mailbox's consent is not complete yet", True),
    mailbox_disconnected=("the mailbox was disconnected", False),
    job_not_cancellable=("the job is past the states that can be cancelled", False),
    job_not_unknown=("only an `unknown` job can be resolved or retried", False),
    provider_not_configured=("the operator did not configure this provider", False),
    capability_not_offered=("the operator turned this capability off for the provider", False),
    provider_unavailable=("the provider's identity platform could not be reached", True),
    provider_not_supported=("no provider of this kind is available to the daemon", False),
    return_url_not_allowed=("the return_url is not on a return origin of the account", False),
    confirmation_mismatch=("`confirm` is not the caller's account id", False),
    # 413, 414, 415, 429, 431
    payload_too_large=("the request body exceeds the server's limit", False),
    message_too_large=("the built message exceeds the provider's size limit", False),
    request_line_too_long=("the request line exceeds 8190 bytes", False),
    unsupported_media_type=("the body is not application/json", False),
    rate_limited=("the API key sent too many requests; wait `Retry-After` seconds", True),
    too_many_failed_attempts=(
        "this client address sent too many invalid API keys; wait `Retry-After` seconds",
        True,
    ),
    invalid_parameter=("a list's query parameter is unknown, repeated or at fault", False),
    invalid_cursor=("the cursor was not given by this list (or was altered)", False),
    request_header_too_large=("a header line exceeds 8190 bytes, or over 128 headers", False),
    # 5xx
    internal_error=("an unexpected failure; it was logged with the request id", True),
    database_unavailable=("the database cannot be reached; wait `Retry-After` seconds", True),
    too_many_connections=("the server has too many open connections; retry later", True),
    server_busy=(
        "the server is busy with other costly requests; wait `Retry-After` seconds",
        True,
    ),
)
"""``Error.code``: every code of an API failure answer."""

JOB_CODES: Mapping[str, CodeMeaning] = _codes(
    # the life of a job
    enqueued=("the job was committed", False),
    started=("an attempt started", False),
    deadline_exceeded=("the job was not done by its deadline", False),
    cancelled_by_client=("the invoicing app cancelled the job", False),
    mailbox_disconnected=("the mailbox was disconnected before the job ran", False),
    resolved_as_sent=("an `unknown` job was settled as sent by the invoicing app", False),
    retried_accepting_duplicate_risk=("an `unknown` job was queued again by the app", False),
    lease_expired=("the worker stopped before calling the provider; the job is tried again", True),
    worker_lost=("the worker stopped with the request in flight: the job is `unknown`", False),
    mailbox_reauth_required=("the mailbox is not connected: the job is `held`", False),
    mailbox_reconnected=("the mailbox was connected again: a held job is `queued`", False),
    retries_exhausted=("the job failed after `worker.max_attempts` transient failures", False),
    worker_stopped=("the daemon stopped during the attempt; the job is tried again", True),
    # transient: the job stays queued and is tried again (never counted against throttling)
    transient=("a temporary failure; the job is tried again", True),
    throttled=("the provider asked us to wait; the job waits, never fails for it", True),
    sending_limit=("the mailbox's daily sending limit at the provider is reached", True),
    project_quota=("the daemon's project quota at the provider is used up", True),
    service_unavailable=("the provider is unavailable and processed nothing", True),
    network=("the request could not be sent (nothing reached the provider)", True),
    timeout=("no answer in time; the request may not have been processed", True),
    upload_stalled=("an upload to the provider made no progress", True),
    access_token_rejected=("the provider refused the access token; it is refreshed", True),
    identity_unavailable=("the identity platform could not be reached", True),
    identity_misconfigured=("the identity platform refuses the daemon's app itself", True),
    database_unavailable=("the daemon's database could not be reached", True),
    # permanent: the job fails, retrying cannot help
    permanent=("the provider refused the message", False),
    delivery_error=("the provider call failed", False),
    invalid_recipients=("the provider refused a recipient", False),
    mime_invalid=("the provider refused the message's MIME", False),
    invalid_message=("the message can no longer be built; its rules changed since", False),
    message_too_large=("the message exceeds the provider's size limit", False),
    scope_missing=("the grant lacks a permission the operation needs", False),
    send_as_denied=("the mailbox may not send as this sender", False),
    mailbox_not_enabled=("the mailbox is not enabled for the provider's API", False),
    provider_rejected=("the provider refused the request", False),
    operation_not_allowed=("the operation is outside the daemon's allow-list", False),
    egress_not_allowed=("the destination is outside the daemon's egress allow-list", False),
    policy_violation=("the operation is forbidden by the privacy rules", False),
    # the grant is gone: the job is held until the mailbox is connected again
    reauth_required=("the mailbox's grant is no longer valid", False),
    invalid_grant=("the provider revoked or expired the grant", False),
    no_grant=("no grant is stored for the mailbox", False),
    identity_rejected=("the identity platform refused the grant", False),
    provider_unconfigured=("the mailbox's provider is no longer configured", False),
    # unknown: the message may have been sent; never re-sent blindly
    outcome_unknown=("the request may have reached the provider", False),
    provider_error_ambiguous=("the provider failed in a way that may follow acceptance", False),
    connection_lost=("the connection was lost after the request was sent", False),
    internal_error=("an unexpected failure while the request was in flight", False),
)
"""``JobError.code`` and ``JobEvent.code``. ``retryable``: the daemon itself tries again."""

MAILBOX_REASONS: Mapping[str, CodeMeaning] = _codes(
    disconnected_by_admin=("an admin disconnected the mailbox", False),
    access_denied=("the admin cancelled or refused the consent", True),
    consent_failed=("the provider reported an error during the consent", True),
    admin_consent_required=("only an organisation administrator may approve the app", True),
    scope_missing=("the consent did not grant every permission needed", True),
    scope_too_broad=("the grant carried a permission beyond sending; it was revoked", True),
    address_unknown=("the provider did not say which mailbox signed in", True),
    address_invalid=("the provider named something that is not a mail address", True),
    address_mismatch=("a reconnect signed in as another mailbox", True),
    identity_unknown=("the provider did not say which account signed in", True),
    identity_mismatch=("a reconnect signed in as another account than the pinned one", True),
    state_invalid=("the authorization's state was unknown or already used", True),
    code_rejected=("the provider refused the authorization code", True),
    provider_unavailable=("the provider could not be reached during the consent", True),
    identity_rejected=("the identity platform refused the grant", True),
    reauth_required=("the grant is no longer valid: connect the mailbox again", True),
    invalid_grant=("the provider revoked or expired the grant: connect it again", True),
    no_grant=("no grant is stored: connect the mailbox again", True),
    provider_unconfigured=("the provider is no longer configured by the operator", False),
)
"""The mailbox's ``state_reason``: why it last changed state or failed a consent.
``retryable``: connecting the mailbox again can help."""

INTERNAL_CODES: Mapping[str, CodeMeaning] = _codes(
    config_invalid=("a setting is wrong; start-up stops", False),
    vault_error=("token storage failed closed", False),
    key_unavailable=("a key-encryption key is not available", False),
    decryption_failed=("ciphertext, key and associated data do not match", False),
    token_conflict=("another writer stored the token record first", True),
    data_key_missing=("a mailbox's data key is missing", False),
    key_active=("a key-encryption key still in use cannot be retired", False),
    revoke_unavailable=("a grant's revocation could not reach the provider yet", True),
    revoke_failed=("the provider refused a grant's revocation", False),
    unexpected_response=("(the Python client) the answer was not the API's JSON", True),
)
"""Codes for logs, metrics, the operator and the Python client's own errors: never in an API
answer or a job."""
