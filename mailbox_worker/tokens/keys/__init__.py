"""Key-encryption keys (KEKs) and the sources they come from.

A KEK wraps each mailbox's data key (see :mod:`mailbox_worker.tokens.envelope`); it never sits in
the database. :class:`~.port.KeySource` is the port (``port.py``), with three adapters:

    KeyringKeySource   the operating system's keyring, the default (``keyring_source.py``)
    FileKeySource      a JSON file of mode 0600: a container's mounted secret, the demo
                       (``file_source.py``)
    EnvKeySource       the ``MAILBOX_WORKER_KEYS`` environment variable, read-only
                       (``env_source.py``)

The two writable stores share ``stored.py`` (caching, locking, rotation, retirement) and
``encoding.py`` (key material as base64 text); ``times.py`` holds the times they record.

Rotation: ``add_key()`` stores a new key and makes it the active one (the key new wraps use);
older keys stay readable, so data keys wrapped under them still unwrap. Once every record has been
re-wrapped, ``retire(old_id)`` removes the old key. Retiring a key that records still name makes
those records unreadable: callers re-wrap first. The writable stores record when each key was
created and superseded (:mod:`mailbox_worker.tokens.keys.times`), from a clock they are given, so
that :mod:`mailbox_worker.tokens.rotation` can rotate on a schedule (see ``docs/keys.md``).

Every source fails closed: a key it cannot produce raises :class:`KeyUnavailable` naming the key
id, a misconfigured source raises :class:`ConfigError` naming the setting. No message ever
contains key material.
"""
