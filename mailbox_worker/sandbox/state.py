"""Everything the sandbox remembers: ``SandboxState``, the one object the server's handlers share.

It *is* the Microsoft simulator's state (directory, tokens, consents, mailboxes; see
``microsoft.state``), which in turn carries the shared counters, faults, timing settings and clock
(``controls``); Google's memory hangs off it as ``google`` (``google.state``) and Gmail's as
``gmail`` (``google.gmail_state``), both reading the same clock. Tests reach all of it as
``Sandbox.state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .google.gmail_state import GmailState
from .google.state import GoogleState
from .microsoft.state import MicrosoftState


@dataclass
class SandboxState(MicrosoftState):
    """The sandbox's memory. Not thread-safe: use it from the sandbox's event loop."""

    google: GoogleState = field(init=False)
    gmail: GmailState = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.google = GoogleState(clock=self.clock)  # one time for both simulators
        self.gmail = GmailState(clock=self.clock)

    def reset(self) -> None:
        """Forget messages (Graph's and Gmail's), counters and faults; settings stay."""
        self.gmail.reset()
        super().reset()
