"""``python -m mailbox_worker.cli``: the same entry point as ``mailbox-worker``."""

from mailbox_worker.cli import main

main()
