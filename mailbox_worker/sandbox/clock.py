"""The sandbox's one clock: the system time plus an offset that tests move forward.

Every expiry the simulators decide (authorization codes, access and refresh tokens, upload
sessions, Google grants) and every time they record, sign into a token or print reads this
clock, so a test expires a token with ``sandbox.state.advance(seconds)`` instead of sleeping
(docs/architecture.md, "The sandbox"). The clients under test (msal, google-auth) keep their own
view of expiry on the system clock, and msal refuses an id token whose ``nbf`` is more than two
minutes ahead of it: advance past a token's lifetime, not far beyond, before a sign-in. The TLS
certificates (``ca``) are checked by real TLS stacks and stay on the system clock.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass


@dataclass
class SandboxClock:
    """The system clock, ``offset`` seconds ahead. Not thread-safe: use it from the event loop."""

    offset: float = 0.0

    def time(self) -> float:
        """Seconds since the epoch, as the sandbox sees them."""
        return time.time() + self.offset

    def utcnow(self) -> datetime.datetime:
        """The same moment as an aware UTC ``datetime``."""
        return datetime.datetime.fromtimestamp(self.time(), datetime.UTC)

    def advance(self, seconds: float) -> None:
        """Move the sandbox's time forward (never back: expired things stay expired)."""
        if seconds < 0:
            raise ValueError("the sandbox clock only moves forward")
        self.offset += seconds
