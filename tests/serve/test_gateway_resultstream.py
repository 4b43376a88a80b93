"""The gateway's results-stream reader on the real Redis (db 13): each result reaches the request that
waits for its job id, and only that one; results older than the reader, results of jobs nobody waits
for and a second message for a job already answered are dropped."""

from __future__ import annotations

import asyncio
import json
import uuid

from conftest import TEST_REDIS_URL

from worker.serve.resultstream import ResultStreamReader


def _xadd(conn, stream: str, job_id: str, **extra) -> dict:
    message = {"job_id": job_id, "status": "ok", "camera_id": "c", **extra}
    conn.xadd(stream, {"result": json.dumps(message), "job_id": job_id, "camera_id": "c"})
    return message


def test_each_result_reaches_its_own_waiter_once(redis_conn):
    stream = f"test:results:{uuid.uuid4().hex}"
    _xadd(redis_conn, stream, "from-before")  # already in the stream when the reader starts

    async def scenario():
        reader = ResultStreamReader(TEST_REDIS_URL, stream)
        reader.start(asyncio.get_running_loop())
        try:
            assert reader.positioned
            old, first, second = reader.expect("from-before"), reader.expect("a"), reader.expect("b")
            _xadd(redis_conn, stream, "nobody-waits")
            b = _xadd(redis_conn, stream, "b", n=1)
            a = _xadd(redis_conn, stream, "a", n=2)
            _xadd(redis_conn, stream, "a", n=3)  # a duplicate: the first message is the answer
            assert await asyncio.wait_for(first, 10) == a
            assert await asyncio.wait_for(second, 10) == b
            await asyncio.sleep(0.2)  # the duplicate has been read by now
            assert not old.done(), "a result from before the reader started was delivered"
            assert reader.waiting == 1  # only the one that never comes
            reader.forget("from-before")
            assert reader.waiting == 0
        finally:
            reader.stop()

    asyncio.run(scenario())
