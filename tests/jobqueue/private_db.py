"""A Redis database of a test module's own on the shared server (the other suites flush db 13)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import redis

from conftest import _redis_up


@contextmanager
def private_db(db: int):
    """The real Redis's database `db`, empty at the start and the end."""
    url = f"redis://127.0.0.1:6379/{db}"
    if not _redis_up(url):
        pytest.fail(f"this test needs Redis at {url} (.ci/run starts one)")
    connection = redis.Redis.from_url(url)
    connection.flushdb()
    try:
        yield connection
    finally:
        connection.flushdb()
