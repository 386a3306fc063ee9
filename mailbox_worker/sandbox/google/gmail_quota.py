"""Rolling-window usage, the shape of both Gmail limits (docs/providers.md D5).

* quota units: 15,000 per user per minute (``userRateLimitExceeded``);
* the sending limit: 2,000 messages per user over a rolling 24 hours ("(Mail sending)").

A ``RollingWindow`` remembers what was used when; ``admit`` either records a use that fits
under the limit or says when it would fit — the time the answer's "Retry after" names.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

UNITS_WINDOW = 60.0
UNITS_PER_USER_PER_MINUTE = 15_000
SENDING_WINDOW = 24 * 60 * 60.0
DAILY_SENDING_LIMIT = 2_000  # Google Workspace (docs/providers.md D5)


@dataclass
class RollingWindow:
    """Amounts used at moments; what is older than ``span`` seconds no longer counts."""

    span: float
    uses: deque[tuple[float, int]] = field(default_factory=deque)

    def used(self, now: float) -> int:
        """The total still inside the window at ``now``."""
        self._forget(now)
        return sum(amount for _, amount in self.uses)

    def admit(self, now: float, amount: int, limit: int) -> float | None:
        """Record ``amount`` at ``now`` and return None if the total stays within ``limit``;
        otherwise record nothing and return the earliest moment it would fit."""
        total = self.used(now)
        if total + amount <= limit:
            self.record(now, amount)
            return None
        excess = total + amount - limit
        for moment, used in self.uses:
            excess -= used
            if excess <= 0:
                return moment + self.span
        # More than the whole limit at once: it never fits; name the end of the window.
        return now + self.span

    def record(self, now: float, amount: int) -> None:
        """Record ``amount`` at ``now`` whatever the limit (a use that went through anyway)."""
        self.uses.append((now, amount))

    def _forget(self, now: float) -> None:
        # A use at t counts during [t, t + span): at exactly t + span it has dropped out, so
        # the "Retry after" moment ``admit`` names is the first at which the retry succeeds.
        while self.uses and self.uses[0][0] + self.span <= now:
            self.uses.popleft()
