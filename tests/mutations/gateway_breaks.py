"""The deliberate breaks the gateway tests catch (issue 16: the ml-detector and Deepstack contracts, the
bounds, readiness, the results-stream reader), run with run.py's machinery:

    .venv/bin/python tests/mutations/gateway_breaks.py [--only NAME] [--list] [--no-baseline]

Each test node starts its own Redis, worker and gateway (about 15-25 s apiece).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

GW, READER = "worker/serve/gateway.py", "worker/serve/resultstream.py"
T, TR = "tests/serve/test_gateway.py::", "tests/serve/test_gateway_resultstream.py::"

GATEWAY_BREAKS = [
    Break("deer-detected-always", GW,
          '"deer_detected": bool(message.get("deer_detected"))', '"deer_detected": True',
          T + "test_coordinator_call_gets_the_ml_detector_schema", "an empty yard reports a deer"),
    Break("detect-class-key-renamed", GW, '[{"class": d["class_name"]', '[{"class_name": d["class_name"]',
          T + "test_coordinator_call_gets_the_ml_detector_schema", "the ml-detector's `class` key changes"),
    Break("threshold-not-echoed", GW,
          "return conf if conf is not None else self.cameras.get(camera_id).confidence",
          "return self.cameras.get(camera_id).confidence",
          T + "test_thresholds_are_honoured", "confidence_threshold is not the one applied"),
    Break("conf-not-sent", GW, "conf=conf, max_age=self.settings.timeout", "conf=None, max_age=self.settings.timeout",
          T + "test_thresholds_are_honoured", "a request's conf never reaches the job"),
    Break("min-confidence-ignored", GW, "conf = None if minimum is None else max(minimum, 0.001)", "conf = None",
          T + "test_thresholds_are_honoured", "Deepstack's min_confidence is ignored"),
    Break("deepstack-float-pixels", GW, "(int(round(v)) for v in d[\"box\"])", "(round(v, 1) for v in d[\"box\"])",
          T + "test_deepstack_post_as_frigate_sends_it", "Deepstack boxes not integer pixels"),
    Break("refused-image-500", GW, "raise GatewayError(STATUS_FOR_KIND.get(exc.kind, 400), exc.kind, str(exc))",
          "raise GatewayError(500, exc.kind, str(exc))",
          T + "test_bad_input_gets_its_status[not an image]", "an unreadable image is the server's error"),
    Break("worker-failure-500", GW, "400 if kind in CLIENT_ERROR_KINDS else 500", "500",
          T + "test_bad_input_gets_its_status[PNG without pixel data]",
          "an image the worker cannot decode is the server's error"),
    Break("error-counter-still", GW, "        self.metrics.requests.labels(endpoint, str(status), kind).inc()\n",
          "", T + "test_bad_input_moves_a_counter_and_the_gateway_goes_on", "bad input moves no counter"),
    Break("body-bound-only-declared", GW, '                remaining -= len(event.get("body", b""))',
          "                pass", T + "test_body_over_the_bound_is_413",
          "a body without Content-Length is read whole, whatever its size"),
    Break("api-key-unchecked", GW, "        if not expected:\n            return",
          "        if True:\n            return", T + "test_api_key", "X-API-Key is not checked"),
    Break("health-ignores-workers", GW, "ready = redis_ok and workers > 0", "ready = redis_ok",
          T + "test_no_ready_worker_health_503_and_timeout_504", "/health is 200 with no worker"),
    Break("no-overload-bound", GW, "if gateway.in_hand >= gateway.settings.max_waiting:", "if False:",
          T + "test_overload_is_429_at_once_with_memory_flat", "requests pile up without bound"),
    Break("rejected-bodies-kept", GW, "            deepstack = scope[\"path\"] == DEEPSTACK_PATH\n",
          "            deepstack = scope[\"path\"] == DEEPSTACK_PATH\n"
          "            gateway.__dict__.setdefault(\"kept\", []).append(await receive())\n",
          T + "test_overload_is_429_at_once_with_memory_flat", "a rejected request's body is kept (memory grows)"),
    Break("redis-down-500", GW, 'raise GatewayError(503, "redis_unavailable", f"Redis is unreachable: {exc}")',
          'raise GatewayError(500, "redis_unavailable", f"Redis is unreachable: {exc}")',
          T + "test_redis_down_is_503_and_the_gateway_comes_back", "Redis down is not 503"),
    Break("taken-port-unchecked", GW, "        with socket.create_server((host, port)):\n            pass\n",
          "        pass\n", T + "test_taken_port_is_one_error_line",
          "a taken port ends in uvicorn's log lines, not one error line"),
    Break("reader-reads-from-the-start", READER, 'self._position = last[0][0].decode() if last else "0-0"',
          'self._position = "0-0"', TR + "test_each_result_reaches_its_own_waiter_once",
          "results from before the reader started answer new requests"),
    Break("reader-misdispatches", READER,
          "self._loop.call_soon_threadsafe(self._deliver, job_id, ",
          "self._loop.call_soon_threadsafe(self._deliver, next(iter(self._waiting)), ",
          TR + "test_each_result_reaches_its_own_waiter_once", "a result answers another job's request"),
    Break("reader-keeps-duplicates", READER, "future = self._waiting.pop(job_id, None)",
          "future = self._waiting.get(job_id)", TR + "test_each_result_reaches_its_own_waiter_once",
          "an answered job's future stays registered (a leak per request)"),
]

if __name__ == "__main__":
    run.BREAKS = GATEWAY_BREAKS
    sys.exit(run.main())
