"""When each key-encryption key was created and superseded, as the key stores record it.

Scheduled rotation (:mod:`mailbox_worker.tokens.rotation`) needs a key's age and the moment it
stopped being the active key. The writable key stores keep both beside the keys, in a
``"times"`` object that older versions ignore and that may be absent (stores written before
this existed)::

    "times": {"kek-20250101-0a0b0c0d": {"created": "2025-01-01T09:30:00+00:00",
                                         "superseded": "2025-01-31T09:30:00+00:00"}}

Times are ISO 8601 with an explicit UTC offset. A missing time is ``None`` here; the rotation
fills it in once (see :meth:`KeyTimes.filled`). See ``docs/keys.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

_DATED_KEY_ID = re.compile(r"kek-(\d{8})-[0-9a-f]+")


@dataclass(frozen=True)
class KeyTimes:
    """``created_at``: when the key was generated; ``superseded_at``: when another key became
    active in its place. Either may be unknown (``None``)."""

    created_at: datetime | None = None
    superseded_at: datetime | None = None

    def filled(self, key_id: str, *, active: bool, now: datetime) -> KeyTimes:
        """These times with the unknown ones filled in conservatively.

        A missing creation time is the date in a ``kek-YYYYMMDD-…`` id (midnight UTC), else
        ``now``; a non-active key with no supersession time is taken as superseded ``now``, so
        its retirement grace starts now rather than in the past.
        """
        created = self.created_at or date_in_key_id(key_id) or now
        superseded = self.superseded_at
        if not active and superseded is None:
            superseded = now
        return KeyTimes(created_at=created, superseded_at=superseded)

    def is_complete(self, *, active: bool) -> bool:
        """Whether every time the rotation needs is known (a non-active key needs both)."""
        return self.created_at is not None and (active or self.superseded_at is not None)


def date_in_key_id(key_id: str) -> datetime | None:
    """Midnight UTC of the date in an id made by ``generate_key`` (``kek-YYYYMMDD-hex``)."""
    match = _DATED_KEY_ID.fullmatch(key_id)
    if match is None:
        return None
    try:
        return datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        return None


def times_to_json(times: Mapping[str, KeyTimes], ids: Iterable[str]) -> dict[str, dict[str, str]]:
    """The ``"times"`` object for the keys ``ids`` (unknown times are left out)."""
    document: dict[str, dict[str, str]] = {}
    for key_id in ids:
        entry = times.get(key_id, KeyTimes())
        fields = {
            name: value.isoformat()
            for name, value in (("created", entry.created_at), ("superseded", entry.superseded_at))
            if value is not None
        }
        if fields:
            document[key_id] = fields
    return document


def times_from_json(document: object, ids: Iterable[str]) -> dict[str, KeyTimes]:
    """Parse a ``"times"`` object (``None`` when absent) for the keys ``ids``.

    Entries for other ids are ignored. Raises ``ValueError`` naming the key id (never any key
    material, which this object does not hold) when an entry is not as documented.
    """
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError('"times" must be an object of id -> {"created", "superseded"}')
    times: dict[str, KeyTimes] = {}
    for key_id in ids:
        entry = document.get(key_id)
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"the times of key {key_id!r} must be an object")
        times[key_id] = KeyTimes(
            created_at=_parse_time(key_id, entry.get("created")),
            superseded_at=_parse_time(key_id, entry.get("superseded")),
        )
    return times


def _parse_time(key_id: str, value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
    raise ValueError(f"a time of key {key_id!r} is not an ISO 8601 time with a UTC offset")
