"""The queue tests' Redis helpers: a database of a test module's own on the shared server (the other
suites flush db 13), and reading a job's result off the server-wide results channel."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager

import pytest
import redis

from conftest import GENEROUS_BOUND, _redis_up


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


def live_result(pubsub, job_id: str) -> dict | None:
    """The message for job_id on the channel. Channels are server-wide, not per database: other test
    runs on this Redis may publish on the same one, so messages of other jobs are skipped."""
    deadline = time.monotonic() + GENEROUS_BOUND  # published already: a local read; returns on the message
    while time.monotonic() < deadline:
        live = pubsub.get_message(timeout=1)
        if live is not None and json.loads(live["data"])["job_id"] == job_id:
            return json.loads(live["data"])
    return None
