"""HTTP endpoints of one worker process: /metrics, /healthz (alive and Redis answers), /readyz.

A stdlib ThreadingHTTPServer in a daemon thread: a scrape or a probe never waits on a job, and a
slow Redis ping blocks only its own request. Exactly three paths exist; nothing is served from disk.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST

from worker.errors import ConfigError
from worker.serve.metrics import WorkerMetrics

log = logging.getLogger(__name__)

JSON_TYPE = "application/json"
ALLOWED = "GET, HEAD"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a stuck client must not keep the process from exiting
    allow_reuse_address = True  # a restarted worker rebinds its port at once


class _Server6(_Server):
    address_family = socket.AF_INET6


class HealthServer:
    def __init__(self, metrics: WorkerMetrics, host: str, port: int, *, redis_ping: Callable[[], bool],
                 ready: Callable[[], bool]) -> None:
        self.metrics, self.host, self._port = metrics, host, port
        self.redis_ping, self.ready = redis_ping, ready
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the one the OS chose for port 0), else the configured one."""
        return self._server.server_address[1] if self._server else self._port

    def start(self) -> HealthServer:
        if self._server is not None:
            return self
        server_class = _Server6 if ":" in self.host else _Server
        try:
            self._server = server_class((self.host, self._port), _handler_for(self))
        except OSError as exc:
            raise ConfigError(f"metrics server cannot listen on {self.host}:{self._port} ({exc.strerror}); "
                              "worker i of a pool uses metrics_port + i") from exc
        # A short poll makes stop() quick; ten wake-ups a second cost nothing next to inference.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,), name=f"health:{self.port}",
                                        daemon=True)
        self._thread.start()
        log.info("metrics and health on http://%s:%d/metrics", self.host, self.port)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HealthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- endpoint bodies: (status, content type, body) ------------------------------------------
    def metrics_page(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, self.metrics.exposition()

    def healthz_page(self) -> tuple[int, str, bytes]:
        try:
            redis_ok, reason = bool(self.redis_ping()), "redis ping returned false"
        except Exception as exc:  # a probe reports a broken Redis; it must not raise it
            redis_ok, reason = False, f"redis ping failed: {type(exc).__name__}: {exc}"
        if redis_ok:
            return 200, JSON_TYPE, _json({"status": "ok", "redis": True})
        return 503, JSON_TYPE, _json({"status": "unavailable", "redis": False, "reason": reason})

    def readyz_page(self) -> tuple[int, str, bytes]:
        try:
            ready = bool(self.ready())
        except Exception as exc:
            log.warning("readiness check raised %s: %s", type(exc).__name__, exc)
            ready = False
        if ready:
            return 200, JSON_TYPE, _json({"status": "ready"})
        return 503, JSON_TYPE, _json({"status": "not ready"})


def _json(obj: dict) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _handler_for(health: HealthServer) -> type[BaseHTTPRequestHandler]:
    pages = {"/metrics": health.metrics_page, "/healthz": health.healthz_page, "/readyz": health.readyz_page}

    class Handler(BaseHTTPRequestHandler):
        server_version = "deer-worker"
        sys_version = ""  # do not advertise the Python version

        def do_GET(self) -> None:
            self._serve(with_body=True)

        def do_HEAD(self) -> None:
            self._serve(with_body=False)

        def __getattr__(self, name: str):
            # Any other method (POST, PUT, DELETE, ...) is a 405, not http.server's 501.
            if name.startswith("do_"):
                return self._not_allowed
            raise AttributeError(name)

        def _not_allowed(self) -> None:
            self.close_connection = True  # the request body, if any, is never read
            self._send(405, "text/plain; charset=utf-8", b"method not allowed\n", True, {"Allow": ALLOWED})

        def _serve(self, with_body: bool) -> None:
            page = pages.get(self.path.split("?", 1)[0])  # exact match: no prefixes, no file system
            if page is None:
                self._send(404, "text/plain; charset=utf-8", b"not found\n", with_body)
                return
            try:
                status, content_type, body = page()
            except Exception:
                log.exception("%s failed", self.path)
                status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            self._send(status, content_type, body, with_body)

        def _send(self, status: int, content_type: str, body: bytes, with_body: bool,
                  headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

    return Handler
