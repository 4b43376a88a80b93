"""An embedded Redis for the demo: a real redis-server when one is on PATH, else fakeredis's
in-process TCP server. Either is private to this process, on a free loopback port, keeps nothing."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from worker.errors import MissingDependencyError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def embedded_redis(kind: str = "auto") -> Iterator[tuple[str, str]]:
    """Yield (url, kind) with kind "redis-server" or "fakeredis"."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    exe = shutil.which("redis-server") if kind in ("auto", "redis-server") else None
    if exe:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(url)
            yield url, "redis-server"
        finally:
            proc.terminate()
            proc.wait(10)
        return
    if kind == "redis-server":
        raise MissingDependencyError("redis-server is not on PATH: install it (apt install redis-server) "
                                     "or use --embedded fakeredis")
    from fakeredis import TcpFakeServer

    server = TcpFakeServer(("127.0.0.1", port), server_version=(7, 2))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _wait_ready(url)
        yield url, "fakeredis"
    finally:
        server.shutdown()
        server.server_close()
