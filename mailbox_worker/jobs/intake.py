"""Accepting dispatch jobs: the rules between a validated request and a committed job row.

The API has already checked the request's shape against the OpenAPI document; the intake
checks what needs the database and the provider: the mailbox is the caller's and can take
jobs, the mode is one of its capabilities, ``from`` is its address, attachments decode and
the built message fits the provider's limit. A job row is committed before this returns.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailbox_worker import lanes
from mailbox_worker.accounts import Principal
from mailbox_worker.clock import Clock, utcnow
from mailbox_worker.db.models import Job, JobEvent, Mailbox
from mailbox_worker.errors import (
    Conflict,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RequestError,
)
from mailbox_worker.jobs.message_json import Marked, dumps_message, mark, pieces
from mailbox_worker.jobs.mime import (
    addresses_in,
    build_message,
    folded_address_lists,
    folding_steps,
    message_size_bound,
    message_size_ceiling,
)
from mailbox_worker.jobs.store import JobFilter, JobStore, NewJob, Position
from mailbox_worker.jobs.transitions import (
    CANCEL_UNKNOWN,
    RESOLVE,
    RETRY,
    Settlement,
    message_id_for,
)
from mailbox_worker.policy.addresses import same_address
from mailbox_worker.policy.domains import spellings_kept
from mailbox_worker.policy.slow_steps import ADDRESSES_ON_THE_LOOP, SLOW_STEPS_ON_THE_LOOP
from mailbox_worker.states import JobState, MailboxState
from mailbox_worker.telemetry import Telemetry

Folded = Mapping[str, str] | ValueError | None
"""A message's address lists folded beforehand (``mime.folded_address_lists``), the
``ValueError`` folding raised, or None: not folded, for the bound to fold itself."""

MessageLimit = Callable[[str, str, Sequence[str]], int | None]
"""``(provider, mode, capabilities) ->`` the largest message in bytes the provider's transport
accepts for a mailbox with those capabilities, or None when no transport for that provider
exists yet."""


@dataclass(frozen=True)
class Submission:
    """A validated enqueue request (the JSON body of ``POST /v1/jobs``)."""

    body: Mapping[str, Any]
    idempotency_key: str | None
    base64_checked: bool = False
    """Whether the body passed the API document's ``JobRequest`` schema, whose base64 pattern
    admits only characters JSON writes as they are: the intake then does not read each
    attachment's content again to know it (``message_json.mark``). The API's handlers say so;
    any other caller gets the check."""
    spellings: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The ASCII forms of its internationalised domains the API's checks spelled
    (``policy/domains.spellings_kept``): the intake's checks, which spell the same recipients
    again, read them here rather than encode them a second time. One dictionary serves every
    item of a batch: it is no part of the submission's repr or equality."""
    request_bytes: int = field(default=0, repr=False, compare=False)
    """The bytes of the request it came in (every item of a batch shares them), which it
    holds while it waits for the costly checks' lane (``lanes.CHECKS``)."""
    client_present: Callable[[], bool] | None = field(default=None, repr=False, compare=False)
    """Whether the request's client is still connected: work for one that hung up is not done
    (``lanes.Lane.run``'s ``wanted``)."""


@dataclass(frozen=True)
class JobEventView:
    """One recorded transition or attempt of a job, as the API shows it (its free-text
    ``detail`` and the worker's host name stay internal)."""

    id: str
    at: dt.datetime
    kind: str
    from_state: JobState | None
    to_state: JobState | None
    code: str | None
    provider_status: int | None

    @classmethod
    def of(cls, event: JobEvent) -> JobEventView:
        return cls(
            id=event.public_id,
            at=event.at,
            kind=event.kind,
            from_state=None if event.from_state is None else JobState(event.from_state),
            to_state=None if event.to_state is None else JobState(event.to_state),
            code=event.code,
            provider_status=event.provider_status,
        )


@dataclass(frozen=True)
class JobView:
    """A job's metadata (never its message), and its events when they were asked for."""

    id: str
    mailbox_id: str
    mode: str
    state: JobState
    reference: str | None
    message_id: str
    attempts: int
    created_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    deadline: dt.datetime | None
    send_at: dt.datetime | None
    priority: int
    last_error_code: str | None
    last_error_message: str | None
    provider_message_id: str | None
    provider_draft_id: str | None
    web_link: str | None
    events: tuple[JobEventView, ...] | None = None

    @classmethod
    def of(cls, job: Job, events: Sequence[JobEvent] | None = None) -> JobView:
        return cls(
            id=job.id,
            mailbox_id=job.mailbox_id,
            mode=job.mode,
            state=JobState(job.state),
            reference=job.reference,
            message_id=job.message_id,
            attempts=job.attempts,
            created_at=job.created_at,
            updated_at=job.updated_at,
            finished_at=job.finished_at,
            deadline=job.deadline,
            send_at=job.send_at,
            priority=job.priority,
            last_error_code=job.last_error_code,
            last_error_message=job.last_error_message,
            provider_message_id=job.provider_message_id,
            provider_draft_id=job.provider_draft_id,
            web_link=job.web_link,
            events=None if events is None else tuple(JobEventView.of(e) for e in events),
        )


class JobIntake:
    def __init__(
        self,
        jobs: JobStore,
        message_limit: MessageLimit,
        telemetry: Telemetry,
        wake_worker: Callable[[], None] = lambda: None,
        clock: Clock = utcnow,
    ) -> None:
        self._jobs = jobs
        self._message_limit = message_limit
        self._telemetry = telemetry
        self._wake_worker = wake_worker
        self._clock = clock

    async def submit(self, principal: Principal, submission: Submission) -> tuple[JobView, bool]:
        """Commit a job and return ``(job, created)``; raises ``RequestError`` subclasses."""
        (result,) = await self.submit_many(principal, [submission])
        if isinstance(result, RequestError):
            raise result
        return result

    async def submit_many(
        self, principal: Principal, submissions: Sequence[Submission]
    ) -> list[tuple[JobView, bool] | RequestError]:
        """``submit`` for each submission, all committed in one transaction: one result per
        submission, in order, either ``(job, created)`` or the ``RequestError`` that
        ``submit`` would raise for it alone (it fails only its own submission).

        With an idempotency key, a retried request gets its first answer whatever happened
        since (the mailbox disconnected, the deadline passed): the client must never enqueue
        it anew. The key is looked up only when a check fails; otherwise the insert meets it
        (``JobStore.enqueue_for_mailboxes``), which saves a read on the common path.
        """
        worked = await _worked_out(submissions)
        digests = [each.digest for each in worked]
        checked: list[NewJob | RequestError] = []
        size = sum(map(_content_size, submissions))

        def prepare(mailboxes: Mapping[str, Mailbox]) -> list[NewJob]:
            # In the jobs' transaction, the mailboxes read and locked (JobStore).
            checked.clear()  # one list of answers per run, should a run ever be repeated
            for submission, each in zip(submissions, worked, strict=True):
                mailbox = mailboxes.get(str(submission.body["mailbox_id"]))
                try:
                    with spellings_kept(submission.spellings):
                        new = self._prepare(principal, submission, each, mailbox)
                    checked.append(new)
                except RequestError as error:
                    checked.append(error)
            return [new for new in checked if isinstance(new, NewJob)]

        mailbox_ids = [str(submission.body["mailbox_id"]) for submission in submissions]
        enqueued = iter(
            await self._jobs.enqueue_for_mailboxes(
                principal.account_id, mailbox_ids, prepare, size=size
            )
        )
        results: list[tuple[JobView, bool] | RequestError] = []
        created: list[Job] = []
        for submission, digest, new in zip(submissions, digests, checked, strict=True):
            if isinstance(new, RequestError):
                results.append(await self._replay_or(new, principal, submission, digest))
                continue
            result = next(enqueued)
            if isinstance(result, Conflict):
                results.append(result)
                continue
            job, fresh = result
            if fresh:
                created.append(job)
            results.append((JobView.of(job), fresh))
        self._after_created(created)
        return results

    async def _replay_or(
        self, error: RequestError, principal: Principal, submission: Submission, digest: str
    ) -> tuple[JobView, bool] | RequestError:
        """The first job of the submission's key (a replay), else ``error``."""
        key = submission.idempotency_key
        if key is None:
            return error
        try:
            first = await self._jobs.replay(principal.account_id, key, digest)
        except Conflict as reused:
            return reused
        return error if first is None else (JobView.of(first), False)

    def _prepare(
        self,
        principal: Principal,
        submission: Submission,
        worked: _WorkedOut,
        mailbox: Mailbox | None,
    ) -> NewJob:
        """The job a submission asks for, once its mailbox (None: not one of the account's)
        can take it and the message fits (with what was ``worked`` out of it beforehand)."""
        body = submission.body
        if mailbox is None:
            raise NotFound("no such mailbox in this account", code="mailbox_not_found")
        if mailbox.state == MailboxState.PENDING_CONSENT or mailbox.address is None:
            raise Conflict(
                "the mailbox is not connected yet: its admin must complete the consent",
                code="mailbox_not_connected",
            )
        if mailbox.state == MailboxState.DISCONNECTED:
            raise Conflict("the mailbox was disconnected", code="mailbox_disconnected")
        mode = str(body["mode"])
        if mode not in mailbox.capabilities:
            raise InvalidRequest(
                f"the mailbox was connected without the {mode!r} capability",
                code="capability_missing",
            )
        message: dict[str, Any] = dict(body["message"])
        sender = (message.get("from") or {}).get("address")
        if sender is not None and not same_address(sender, mailbox.address):
            raise InvalidRequest(
                "message.from must be the mailbox's own address", code="from_mismatch"
            )
        now = self._clock()
        deadline = _future_time(body.get("deadline"), now, "deadline", "invalid_deadline")
        send_at = _future_time(body.get("send_at"), now, "send_at", "invalid_send_at")
        if send_at is not None and deadline is not None and send_at >= deadline:
            raise InvalidRequest("send_at must be before the deadline", code="invalid_send_at")
        domain = mailbox.address.rpartition("@")[2]
        self._check_size(message, mailbox, mode, domain, worked.folded)
        return NewJob(
            account_id=principal.account_id,
            mailbox_id=mailbox.id,
            mode=mode,
            payload=message,
            payload_json=(
                dumps_message(message, worked.marked)
                if worked.payload_json is None
                else worked.payload_json
            ),
            request_sha256=worked.digest,
            message_id_domain=domain,
            idempotency_key=submission.idempotency_key,
            reference=body.get("reference"),
            deadline=deadline,
            held=mailbox.state == MailboxState.REAUTH_REQUIRED,
            send_at=send_at,
            priority=int(body.get("priority", 0)),
        )

    def _after_created(self, jobs: Sequence[Job]) -> None:
        """Count the new jobs; wake the worker if one of them is queued (due now, or
        scheduled: the worker's claim then tells it when the soonest is due).

        Nothing needs settling: each job was made for its mailbox's state as it is when the
        job commits (``JobStore.enqueue_for_mailboxes``), and a state change that commits
        later sweeps the job itself."""
        for job in jobs:
            self._telemetry.job_enqueued(job.mode)
        if any(job.state == JobState.QUEUED for job in jobs):
            self._wake_worker()

    def _check_size(
        self, message: dict[str, Any], mailbox: Mailbox, mode: str, domain: str, folded: Folded
    ) -> None:
        sender, provider, capabilities = (
            mailbox.address or "",
            mailbox.provider,
            mailbox.capabilities,
        )
        sizes: list[int] = []
        for attachment in message.get("attachments") or ():
            size = decoded_size(attachment["content_base64"])
            if size is None:
                raise InvalidRequest(
                    f"attachment {attachment.get('filename')!r}: content_base64 is not base64",
                    code="invalid_attachment",
                )
            sizes.append(size)
        limit = self._message_limit(provider, mode, capabilities)
        if limit is None:
            raise Conflict(
                f"sending through {provider} mailboxes is not available yet",
                code="provider_not_supported",
            )
        placeholder = message_id_for("job_" + "0" * 32, domain)
        try:
            if isinstance(folded, ValueError):
                raise folded  # folding it beforehand failed: its answer, in its turn
            # Lists folded beforehand are counted as written, without a look at each address.
            ceiling = message_size_ceiling(
                message, message_id=placeholder, sender=sender, decoded_sizes=sizes, folded=folded
            )
            if ceiling is not None and ceiling <= limit:
                return  # far below the limit, as nearly every invoice is: nothing to encode
            # The bound costs the same for any attachment size; the worker builds the message
            # itself, so it is built in full here only when the bound is over the limit.
            size = message_size_bound(
                message, message_id=placeholder, sender=sender, decoded_sizes=sizes, folded=folded
            )
            if size > limit:
                built = build_message(message, message_id=placeholder, sender=sender, folded=folded)
                size = len(built)
        except ValueError as error:
            raise InvalidRequest(
                f"the message cannot be built: {type(error).__name__}", code="invalid_message"
            ) from None
        if size > limit:
            with_drafts = self._message_limit(provider, mode, [*capabilities, "draft"]) or 0
            hint = (
                "; a mailbox connected with the draft capability may send larger ones"
                if size <= with_drafts
                else ""
            )
            raise PayloadTooLarge(
                f"the message would be {size} bytes; this mailbox's provider accepts at most "
                f"{limit} bytes per message{hint}",
                code="message_too_large",
            )

    async def get(self, principal: Principal, job_id: str) -> JobView:
        """The job with its events; ``NotFound`` for another account's or an unknown job."""
        job = await self._jobs.get(job_id, principal.account_id)
        if job is None:
            raise NotFound("no such job in this account", code="job_not_found")
        return JobView.of(job, await self._jobs.events(job.id))

    async def find(
        self,
        principal: Principal,
        wanted: JobFilter,
        limit: int,
        after: Position | None = None,
    ) -> list[JobView]:
        """The caller's jobs matching ``wanted`` (its account only, whatever ``wanted``
        names), newest first, at most ``limit``, after ``after``; metadata, no events."""
        mine = dataclasses.replace(wanted, account_id=principal.account_id)
        return [JobView.of(job) for job in await self._jobs.find(mine, limit, after)]

    async def cancel(self, principal: Principal, job_id: str) -> JobView:
        """Cancel a queued or held job; ``Conflict`` (job_not_cancellable) once it left them."""
        job = await self._jobs.cancel(job_id, principal.account_id, actor=principal.key_id)
        if job is None:
            raise NotFound("no such job in this account", code="job_not_found")
        if job.state == JobState.UNKNOWN:
            return await self._settle(principal, job_id, CANCEL_UNKNOWN)
        if job.state != JobState.CANCELLED:
            raise Conflict(
                f"the job is {job.state}; only {JobState.QUEUED}, {JobState.HELD} or "
                f"{JobState.UNKNOWN} jobs can be cancelled",
                code="job_not_cancellable",
            )
        return JobView.of(job)

    async def resolve(self, principal: Principal, job_id: str) -> JobView:
        """Settle an ``unknown`` job as ``sent`` (the client saw the message arrive)."""
        return await self._settle(principal, job_id, RESOLVE)

    async def retry(self, principal: Principal, job_id: str) -> JobView:
        """Queue an ``unknown`` job again; the caller has accepted the risk of a duplicate."""
        return await self._settle(principal, job_id, RETRY)

    async def _settle(self, principal: Principal, job_id: str, settlement: Settlement) -> JobView:
        settled = await self._jobs.settle_unknown(
            job_id, settlement, principal.key_id, principal.account_id
        )
        if settled is None:
            raise NotFound("no such job in this account", code="job_not_found")
        job, moved = settled
        if not moved:
            raise Conflict(
                f"the job is {job.state}; only an {JobState.UNKNOWN} job can be settled this way",
                code="job_not_unknown",
            )
        if job.state == JobState.QUEUED:
            self._wake_worker()
        return JobView.of(job)


def decoded_size(content_base64: str) -> int | None:
    """How many bytes the padded base64 ``content_base64`` decodes to, counted from its
    length (three per four characters, less one per ``=``), or None when its length cannot
    be padded base64.

    The API checked the characters already (the document's pattern, ``is_standard_base64``):
    decoding the attachment only to learn its length cost about 0.3 ms per 100 KB
    (docs/performance.md, "The enqueue request"); the worker decodes it when it builds the
    message.
    """
    if len(content_base64) % 4:
        return None
    padding = 2 if content_base64.endswith("==") else 1 if content_base64.endswith("=") else 0
    return len(content_base64) // 4 * 3 - padding


def _request_digest(body: Any, marked: Marked | None) -> str:
    """The SHA-256 of the body's canonical JSON (sorted keys, no spaces, UTF-8): the same for
    the same request however its client ordered and spaced it. The attachments' base64,
    nearly all of the bytes, is hashed as it is rather than through ``json.dumps``
    (``marked``: ``mark`` of the body's message; ``jobs/message_json.py``)."""
    digest = hashlib.sha256()
    for piece in pieces(body, _canonical, marked, _with_message):
        digest.update(piece.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class _WorkedOut:
    """What the intake works out of a submission before the jobs' transaction."""

    marked: Marked | None
    """Its message's attachments, marked once for its digest and its stored JSON."""
    digest: str
    payload_json: str | None = None
    """Its message as stored, when written beforehand; else written in the transaction."""
    folded: Folded = None


async def _worked_out(submissions: Sequence[Submission]) -> list[_WorkedOut]:
    """Each submission's digest, and for a costly request its stored JSON and its address
    lists folded, all of it beside the loop (``lanes.CHECKS``), for the transaction to use.

    A request is costly when it holds more than ``ADDRESSES_ON_THE_LOOP`` addresses (each
    costs a few µs to hash, write and size: 0.3 s for the 300,000 of an 11 MB batch), or
    when its lists take more than ``SLOW_STEPS_ON_THE_LOOP`` slow steps to fold
    (``mime.folding_steps``: lists the email package folds, about 100 µs an address; an
    address too long for a line, 15 to 35 ms). A 16 MB batch of such lists held the loop for
    a minute and more, in the transaction (docs/performance.md, "The addresses' checks")."""
    messages = [_message_of(submission.body) for submission in submissions]
    mappings = [message if isinstance(message, Mapping) else {} for message in messages]

    def work_out(costly: bool) -> list[_WorkedOut]:
        worked = []
        for submission, message, mapping in zip(submissions, messages, mappings, strict=True):
            marked = mark(message, base64_checked=submission.base64_checked)
            digest = _request_digest(submission.body, marked)
            if not (costly and mapping):
                worked.append(_WorkedOut(marked, digest))
                continue
            folded: Folded
            try:
                with spellings_kept(submission.spellings):
                    folded = folded_address_lists(mapping)
            except ValueError as error:  # raised in the transaction, in its turn
                folded = error
            payload_json = dumps_message(dict(mapping), marked)
            worked.append(_WorkedOut(marked, digest, payload_json, folded))
        return worked

    if sum(map(addresses_in, mappings)) <= ADDRESSES_ON_THE_LOOP:
        steps = 0
        for submission, mapping in zip(submissions, mappings, strict=True):
            with spellings_kept(submission.spellings):
                steps += folding_steps(mapping)
        if steps <= SLOW_STEPS_ON_THE_LOOP:
            return work_out(costly=False)
    first = submissions[0]
    return await lanes.CHECKS.run(
        lambda: work_out(costly=True), size=first.request_bytes, wanted=first.client_present
    )


def _message_of(body: Any) -> Any:
    return body.get("message") if isinstance(body, dict) else None


def _with_message(body: Any, message: dict[str, Any]) -> Any:
    return {**body, "message": message}


def _canonical(body: Any) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _future_time(value: Any, now: dt.datetime, name: str, code: str) -> dt.datetime | None:
    """The RFC 3339 time ``value`` (with an offset, after ``now``), or None when absent;
    ``InvalidRequest`` with ``code`` otherwise."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(str(value).upper().replace("Z", "+00:00"))
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC)  # may overflow: 9999-12-31T23:59:59-01:00
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{name} must be an RFC 3339 date-time", code=code) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"{name} needs a time zone offset", code=code)
    if moment <= now:
        raise InvalidRequest(f"{name} is in the past", code=code)
    return moment


def _content_size(submission: Submission) -> int:
    """About how many characters a submission's stored message holds: its bodies and its
    attachments' base64, the parts that can be large (``JobStore.enqueue_for_mailboxes``)."""
    message = submission.body.get("message")
    if not isinstance(message, Mapping):
        return 0
    size = sum(
        len(part) for part in (message.get("text"), message.get("html")) if isinstance(part, str)
    )
    for attachment in message.get("attachments") or ():
        content = attachment.get("content_base64") if isinstance(attachment, Mapping) else None
        if isinstance(content, str):
            size += len(content)
    return size
