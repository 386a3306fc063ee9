"""The garbage collector's settings for a long-running ``serve`` process.

CPython's cyclic collector runs its youngest generation every 700 net allocations of
container objects (dicts, lists, instances...). An enqueue request makes thousands of them
(the parsed body, the schema's checks, the job's row), nearly all freed by reference counting
as soon as the request is answered, so the collector kept walking objects that were about to
go anyway: about a tenth of the API's CPU on ``POST /v1/jobs`` and ``/v1/job-batches``, and the
full collections also walked every module, schema and statement built at startup.

``settle_after_startup`` collects once, then freezes what startup built (``gc.freeze``: the
collections that follow skip it; it lives as long as the process anyway) and raises the
youngest generation's threshold to ``YOUNG_THRESHOLD``. Cycles are still collected, only
less often; reference counting, which frees nearly everything, is unchanged.
Measured in docs/performance.md "Sixth pass".
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000
"""Net allocations of container objects between two collections of the youngest generation
(CPython's default: 700). The older generations keep their own thresholds."""


def settle_after_startup() -> None:
    """Collect, freeze the objects startup made, and collect the young generation less often.
    Call once, when the process has built what it keeps (``cli/serve.py``; the allocator's
    setting, ``cli/allocator.py``, is made at the command's start)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


__all__ = ["YOUNG_THRESHOLD", "settle_after_startup"]
