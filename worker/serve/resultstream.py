"""One reader of the results stream per process, handing each job's result to whoever waits for it.

A process that waits for many jobs at once (the HTTP gateway) must not poll RQ per job, nor rely on
pub/sub alone: a message PUBLISHed while the subscriber reconnects (a Redis restart, a failover) is
gone. So one thread reads `deer:results:stream` with XREAD BLOCK from a saved position (the stream's
last entry when the reader first connects, then each entry it has read), and after a reconnect goes
on from that position: nothing added meanwhile is missed. Each result is dispatched by job id to the
asyncio future registered for it; a second message for the same job id (a duplicate) finds no
future and is dropped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

import redis

from worker.jobqueue.connections import connect

log = logging.getLogger(__name__)

BLOCK_MS = 1000  # XREAD BLOCK bound: how soon stop() is noticed; a result wakes the reader at once
READ_COUNT = 512  # entries per XREAD: a backlog of results is dispatched in few round trips
MAX_BACKOFF = 1.0  # seconds between reconnect attempts, at most


class ResultStreamReader:
    """`expect(job_id)` before enqueueing the job, await the future, `forget(job_id)` when done."""

    def __init__(self, redis_url: str, stream: str) -> None:
        self.stream = stream
        # The reply bound is the BLOCK time plus a margin: a hung Redis shows as an error, not a hang.
        self._connection = connect(redis_url, timeout=2.0, command_timeout=BLOCK_MS / 1000 + 5.0)
        self._waiting: dict[str, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._position: str | None = None  # the last stream id read; None until first connected
        self._stop = threading.Event()
        self._positioned = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def positioned(self) -> bool:
        """True once the reader holds a stream position: from then on no result can be missed."""
        return self._positioned.is_set()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._take_position()  # before the first request when Redis is up; else the thread retries
        self._thread = threading.Thread(target=self._run, name="results-stream", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BLOCK_MS / 1000 + 6.0)

    def expect(self, job_id: str) -> asyncio.Future:
        """Call on the event loop, before the job is enqueued, so its result cannot arrive unexpected."""
        future = self._loop.create_future()
        self._waiting[job_id] = future
        return future

    def forget(self, job_id: str) -> None:
        self._waiting.pop(job_id, None)

    def _take_position(self) -> bool:
        if self._position is not None:
            return True
        try:
            last = self._connection.xrevrange(self.stream, count=1)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("results stream %s: Redis unavailable (%s)", self.stream, exc)
            return False
        self._position = last[0][0].decode() if last else "0-0"
        self._positioned.set()
        return True

    def _run(self) -> None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                if not self._take_position():
                    raise redis.ConnectionError("no stream position yet")
                replies = self._connection.xread({self.stream: self._position}, count=READ_COUNT, block=BLOCK_MS)
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.debug("results stream %s: %s; retrying in %.1f s", self.stream, exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            for _stream, entries in replies or ():
                for entry_id, fields in entries:
                    self._position = entry_id.decode()
                    job_id = fields.get(b"job_id", b"").decode()
                    if job_id in self._waiting:  # read without a lock: a miss is re-checked on the loop
                        self._loop.call_soon_threadsafe(self._deliver, job_id, fields.get(b"result", b"{}"))

    def _deliver(self, job_id: str, encoded: bytes) -> None:
        future = self._waiting.pop(job_id, None)
        if future is None or future.done():  # a duplicate, or its request gave up
            return
        try:
            message: Any = json.loads(encoded)
        except ValueError as exc:
            future.set_exception(exc)
            return
        future.set_result(message)
