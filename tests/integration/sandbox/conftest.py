"""Fixtures of the sandbox tests (``sandbox``, ``http`` and ``requests_session`` come from
``tests/integration/sandbox_fixtures.py``)."""

from __future__ import annotations

import pytest
import requests


@pytest.fixture
def session(requests_session: requests.Session) -> requests.Session:
    """The Google tests' name for ``requests_session``."""
    return requests_session
