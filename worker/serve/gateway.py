"""`deer-worker gateway`: the user's `POST /detect` (their ml-detector) and the Deepstack API in front
of the queue, so a coordinator, Frigate or Home Assistant switch to the workers by changing one URL.

Each image is one queue job (contract v2: the request's `conf`, and `max_age` = the request timeout,
since a waiting client is live); its answer is that job's result message, delivered by the one
results-stream reader of the process (resultstream.py), not by polling. Memory is bounded: at most
`max_waiting` requests are in hand (one more gets 429 before its body is read) and a body is at most
`max_body` bytes (413).

Statuses: 200 a result; 400 an unreadable image or a bad field (with the error kind); 401 a wrong
API key; 409 the camera is disabled; 413 too large; 429 too many waiting; 503 Redis unreachable or
no worker serves the model; 504 no result within the timeout. The user's coordinator drops a
snapshot on any non-2xx, so the defaults are generous (25 s timeout, 64 waiting).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from rq import Queue, Worker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker import errors
from worker.cameras import load_camera_book
from worker.config import WorkerConfig
from worker.constants import METRICS_PREFIX
from worker.jobqueue.connections import SERIALIZER, connect
from worker.jobqueue.producer import enqueue_snapshot
from worker.serve.model_state import FAILED, SWITCHED, answers, read_desired, resolve_model
from worker.serve.resultstream import ResultStreamReader

log = logging.getLogger(__name__)

DEFAULT_PORT = 8001  # the user's ml-detector's port
DEFAULT_TIMEOUT = 25.0  # below the coordinator's 30 s httpx timeout: it gets our 504, not its own
DEFAULT_MAX_WAITING = 64
DEFAULT_MAX_BODY = 16 * 1024 * 1024
DEFAULT_CAMERA = "http"  # camera id of a /detect request without one: zones.yaml's `default` applies
DEEPSTACK_CAMERA = "deepstack"  # Frigate posts region crops, never a whole camera frame
API_KEY_HEADER = "x-api-key"
DEEPSTACK_PATH = "/v1/vision/detection"

# Result error kinds that are the client's image or fields (400), not the service's trouble (5xx).
CLIENT_ERROR_KINDS = frozenset({errors.InputError.kind, errors.PayloadError.kind}
                               | {cls.kind for cls in errors.InputError.__subclasses__()})
STATUS_FOR_KIND = {errors.PayloadTooLargeError.kind: 413, errors.ModelUnavailableError.kind: 503,
                   "too_old": 504, "camera_disabled": 409, "superseded": 409}


def _model_version(config: WorkerConfig, model: str = "") -> str:
    """The version a model's card or metadata records (`model` as the desired state names it: a name under
    models_dir or a path; "" = the config's `model:`); "" when this host cannot read it."""
    from worker.inference.runtime import load_spec

    try:
        return load_spec(resolve_model(config, model) if model else config.resolve(config.model))[0].version
    except errors.DeerWorkerError as exc:  # the workers will say; the gateway does not serve the model
        log.warning("model version of %s unknown here: %s", model or config.model, exc)
        return ""


class GatewayError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


@dataclass(frozen=True)
class GatewaySettings:
    timeout: float = DEFAULT_TIMEOUT  # seconds a request waits for its result; also its job's max_age
    max_waiting: int = DEFAULT_MAX_WAITING  # requests in hand at once; one more gets 429
    max_body: int = DEFAULT_MAX_BODY  # bytes of one request body
    api_key: str | None = None  # when set, X-API-Key (or Deepstack's api_key field) must match


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(f"{METRICS_PREFIX}_gateway_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status", "error_kind"], registry=self.registry)
        self.waiting = Gauge(f"{METRICS_PREFIX}_gateway_requests_in_progress", "requests in hand",
                             registry=self.registry)


def detect_answer(message: dict[str, Any], threshold: float) -> dict[str, Any]:
    """A result message as the user's ml-detector answered: 4-decimal confidences, 2-decimal boxes. Its
    deer_detected is the worker's, decided by the model that served it (its alert classes), never recomputed
    here: this gateway may not know that model, and a reload may change it between two answers."""
    detections = [{"class": d["class_name"], "class_id": d["class_id"], "confidence": round(d["confidence"], 4),
                   "bbox": dict(zip(("x1", "y1", "x2", "y2"), (round(v, 2) for v in d["box"])))}
                  for d in message.get("detections", [])]
    image = message.get("image", {})
    return {"deer_detected": bool(message.get("deer_detected")), "num_detections": len(detections),
            "detections": detections, "image_size": {"width": image.get("width"), "height": image.get("height")},
            "confidence_threshold": threshold, "model_version": message.get("model", {}).get("version", "")}


def _deepstack_json(message: dict[str, Any]) -> dict[str, Any]:
    predictions = [{"label": d["class_name"], "confidence": d["confidence"],
                    **dict(zip(("x_min", "y_min", "x_max", "y_max"), (int(round(v)) for v in d["box"])))}
                   for d in message.get("detections", [])]
    return {"success": True, "predictions": predictions, "duration": 0}  # Deepstack's duration is always 0


def _probability(text: str | None, field: str, *, low_inclusive: bool) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise GatewayError(400, "bad_request", f"{field}: expected a number in (0, 1], got {text!r}") from None
    if not ((0.0 <= value if low_inclusive else 0.0 < value) and value <= 1.0):
        raise GatewayError(400, "bad_request", f"{field}: expected a number in (0, 1], got {text!r}")
    return value


class Gateway:
    def __init__(self, config: WorkerConfig, settings: GatewaySettings) -> None:
        self.config, self.settings = config, settings
        self.cameras = load_camera_book(config.resolve(config.zones))
        # Every reply bounded: a hung Redis answers 503 within seconds, not at the client's timeout.
        self.redis = connect(config.redis_url, timeout=2.0, command_timeout=5.0)
        self.results = ResultStreamReader(config.redis_url, config.results_stream)
        self.metrics = _Metrics()
        self.in_hand = 0
        self.model_version = ""  # the last result's model.version: what actually serves
        self._versions: dict[str, str] = {}  # model as the desired state names it -> its recorded version
        self.app = Starlette(routes=[
            Route("/detect", self.detect, methods=["POST"]),
            Route("/detect-batch", self.detect_batch, methods=["POST"]),
            Route(DEEPSTACK_PATH, self.deepstack, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
        ], lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app):
        await run_in_threadpool(self.results.start, asyncio.get_running_loop())
        self.model_version = await run_in_threadpool(_model_version, self.config)
        try:
            yield
        finally:
            await run_in_threadpool(self.results.stop)

    # --- the pieces every endpoint shares -------------------------------------------------------
    def _check_key(self, request: Request, form_key: str | None = None) -> None:
        expected = self.settings.api_key
        if not expected:
            return
        given = request.headers.get(API_KEY_HEADER) or form_key or ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise GatewayError(401, "unauthorized", "missing or wrong API key (X-API-Key header or api_key field)")

    async def _form(self, request: Request) -> FormData:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body:
            raise GatewayError(413, "payload_too_large",
                               f"request body {declared} bytes, more than the gateway's {self.settings.max_body}")
        try:
            return await request.form(max_files=64, max_fields=64, max_part_size=self.settings.max_body)
        except _BodyTooLarge:
            raise GatewayError(413, "payload_too_large",
                               f"request body over the gateway's {self.settings.max_body} bytes") from None
        except Exception as exc:  # python-multipart's and Starlette's parse errors vary by version
            raise GatewayError(400, "bad_request", f"not a multipart/form-data body: {exc}") from None

    @staticmethod
    def _field(request: Request, form: FormData, name: str) -> str | None:
        value = form.get(name)
        if isinstance(value, str) and value != "":
            return value
        return request.query_params.get(name)

    async def _image(self, form: FormData, field: str) -> tuple[str, bytes]:
        upload = form.get(field)
        if not isinstance(upload, UploadFile):
            raise GatewayError(400, "bad_request", f"multipart field {field!r} with an image file is required")
        return upload.filename or "", await upload.read()

    async def _run_job(self, data: bytes, camera_id: str, conf: float | None) -> dict[str, Any]:
        """Enqueue one snapshot and wait for its result message; errors as GatewayError."""
        if not self.results.positioned:
            raise GatewayError(503, "redis_unavailable", "Redis is unreachable (results stream not read yet)")
        job_id = uuid.uuid4().hex
        future = self.results.expect(job_id)
        try:
            try:
                await run_in_threadpool(
                    enqueue_snapshot, self.redis, data, camera_id, job_id=job_id, queue=self.config.queue,
                    conf=conf, max_age=self.settings.timeout, max_snapshot_bytes=self.config.max_snapshot_bytes,
                    job_timeout=self.config.job_timeout, result_ttl=self.config.result_ttl,
                    failure_ttl=self.config.failure_ttl, queued_ttl=self.config.queued_ttl,
                    retries=self.config.retries)
            except errors.DeerWorkerError as exc:  # refused before Redis: what a worker would refuse
                raise GatewayError(STATUS_FOR_KIND.get(exc.kind, 400), exc.kind, str(exc)) from None
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise GatewayError(503, "redis_unavailable", f"Redis is unreachable: {exc}") from None
            try:
                message = await asyncio.wait_for(future, self.settings.timeout)
            except asyncio.TimeoutError:
                raise GatewayError(504, "timeout", f"no result within {self.settings.timeout:g} s "
                                                   f"(job {job_id}; are workers running?)") from None
        finally:
            self.results.forget(job_id)
        self.model_version = message.get("model", {}).get("version", self.model_version)
        if message.get("status") != "ok":
            error = message.get("error") or {}
            kind = error.get("kind", "failed")
            status = STATUS_FOR_KIND.get(kind, 400 if kind in CLIENT_ERROR_KINDS else 500)
            raise GatewayError(status, kind, f"{message.get('status')}: {error.get('message') or kind}")
        return message

    def _threshold(self, camera_id: str, conf: float | None) -> float:
        return conf if conf is not None else self.cameras.get(camera_id).confidence

    def _answer(self, endpoint: str, status: int, body: dict[str, Any], kind: str = "") -> JSONResponse:
        self.metrics.requests.labels(endpoint, str(status), kind).inc()
        return JSONResponse(body, status_code=status)

    async def _detect_request(self, request: Request) -> tuple[FormData, str, float | None]:
        """What /detect and /detect-batch share: the key, the form, the camera id and conf (form or query)."""
        self._check_key(request)
        form = await self._form(request)
        camera_id = self._field(request, form, "camera") or DEFAULT_CAMERA
        return form, camera_id, _probability(self._field(request, form, "conf"), "conf", low_inclusive=False)

    # --- endpoints ------------------------------------------------------------------------------
    async def detect(self, request: Request) -> JSONResponse:
        try:
            form, camera_id, conf = await self._detect_request(request)
            _, data = await self._image(form, "file")
            message = await self._run_job(data, camera_id, conf)
        except GatewayError as exc:
            return self._answer("detect", exc.status, {"detail": str(exc), "error_kind": exc.kind}, exc.kind)
        return self._answer("detect", 200, detect_answer(message, self._threshold(camera_id, conf)))

    async def detect_batch(self, request: Request) -> JSONResponse:
        try:
            form, camera_id, conf = await self._detect_request(request)
            uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            if not uploads:
                raise GatewayError(400, "bad_request", "multipart field 'files' with one or more images is required")
            if self.in_hand + len(uploads) - 1 > self.settings.max_waiting:
                raise GatewayError(429, "overloaded", f"{len(uploads)} images with {self.in_hand - 1} other requests "
                                                      f"in hand, over the bound of {self.settings.max_waiting}")
            names = [u.filename or "" for u in uploads]
            datas = [await u.read() for u in uploads]
        except GatewayError as exc:
            return self._answer("detect-batch", exc.status, {"detail": str(exc), "error_kind": exc.kind}, exc.kind)
        outcomes = await asyncio.gather(*(self._run_job(d, camera_id, conf) for d in datas), return_exceptions=True)
        threshold = self._threshold(camera_id, conf)
        results = []
        for name, outcome in zip(names, outcomes):
            if isinstance(outcome, GatewayError):
                results.append({"filename": name, "success": False, "error": f"{outcome.kind}: {outcome}"})
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                results.append({"filename": name, "success": True, "result": detect_answer(outcome, threshold)})
        body = {"total_images": len(results), "successful": sum(r["success"] for r in results),
                "deer_detected_count": sum(r["success"] and r["result"]["deer_detected"] for r in results),
                "results": results}
        return self._answer("detect-batch", 200, body)

    async def deepstack(self, request: Request) -> JSONResponse:
        try:
            form = await self._form(request)
            key = form.get("api_key")
            self._check_key(request, key if isinstance(key, str) else None)
            # Deepstack accepts 0; the contract's conf is > 0, and a threshold of 0.001 keeps everything.
            minimum = _probability(self._field(request, form, "min_confidence"), "min_confidence",
                                   low_inclusive=True)
            conf = None if minimum is None else max(minimum, 0.001)
            _, data = await self._image(form, "image")
            message = await self._run_job(data, self._field(request, form, "camera") or DEEPSTACK_CAMERA, conf)
        except GatewayError as exc:
            return self._answer("deepstack", exc.status, {"success": False, "error": f"{exc.kind}: {exc}"}, exc.kind)
        return self._answer("deepstack", 200, _deepstack_json(message))

    def ready_workers(self) -> int:
        """Workers registered with RQ on our queue. A worker registers only once its model is compiled
        and warmed, and unregisters when it stops; RQ drops a killed one when its heartbeat key expires."""
        queue = Queue(self.config.queue, connection=self.redis, serializer=SERIALIZER)
        return len(Worker.all(connection=self.redis, queue=queue))

    def _version_of(self, model: str) -> str:
        if model not in self._versions:  # a model folder is never exported over: its version stays
            self._versions[model] = _model_version(self.config, model)
        return self._versions[model]

    def stored_model(self) -> dict | None:
        """The model state in Redis (deer-worker reload / promote / rollback), None when none was set: the
        desired model, and the version that serves: the one the workers answered they switched to; while
        they switch (or once their answers expired), the desired model's own; if every answer is a failure,
        the previous model's, which they kept serving."""
        desired = read_desired(self.redis)
        if desired is None:
            return None
        answered = answers(self.redis, desired.generation).values()
        switched = [a.get("version", "") for a in answered if a.get("status") == SWITCHED]
        failed = sum(a.get("status") == FAILED for a in answered)
        version = switched[0] if switched else self._version_of(desired.previous) if failed else \
            self._version_of(desired.model)
        return {"desired": desired.model, "previous": desired.previous, "generation": desired.generation,
                "version": version, "workers_switched": len(switched), "workers_failed": failed}

    async def health(self, request: Request) -> JSONResponse:
        try:
            workers, stored = await run_in_threadpool(lambda: (self.ready_workers(), self.stored_model()))
            redis_ok = True
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            workers, stored, redis_ok = 0, None, False
        ready = redis_ok and workers > 0
        # The model state in Redis beats the last result: after a promote, /health names the new model
        # before any result of it went through this gateway.
        version = stored["version"] if stored and stored["version"] else self.model_version
        body = {"status": "healthy" if ready else "unavailable", "model_version": version,
                "confidence_threshold": self.cameras.default.confidence, "workers_ready": workers,
                "redis": redis_ok, "model": stored}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def prometheus(self, request: Request) -> Response:
        self.metrics.waiting.set(self.in_hand)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class _BodyTooLarge(Exception):
    pass


class BoundedRequests:
    """ASGI middleware: at most `max_waiting` POSTs in hand (429 at once, before the body is read) and at
    most `max_body` bytes read per body, whatever Content-Length said (413)."""

    def __init__(self, app, gateway: Gateway) -> None:
        self.app, self.gateway = app, gateway

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        gateway = self.gateway
        if gateway.in_hand >= gateway.settings.max_waiting:
            kind = "overloaded"
            text = f"{gateway.in_hand} requests in hand, the bound is {gateway.settings.max_waiting}; retry later"
            deepstack = scope["path"] == DEEPSTACK_PATH
            body = {"success": False, "error": f"{kind}: {text}"} if deepstack else {"detail": text, "error_kind": kind}
            gateway.metrics.requests.labels("deepstack" if deepstack else scope["path"].strip("/"), "429", kind).inc()
            return await JSONResponse(body, status_code=429, headers={"Retry-After": "1"})(scope, receive, send)
        remaining = gateway.settings.max_body

        async def bounded_receive():
            nonlocal remaining
            event = await receive()
            if event["type"] == "http.request":
                remaining -= len(event.get("body", b""))
                if remaining < 0:
                    raise _BodyTooLarge()
            return event

        gateway.in_hand += 1
        try:
            await self.app(scope, bounded_receive, send)
        finally:
            gateway.in_hand -= 1


def build_app(config: WorkerConfig, settings: GatewaySettings):
    gateway = Gateway(config, settings)
    return BoundedRequests(gateway.app, gateway), gateway


def run_gateway(config: WorkerConfig, settings: GatewaySettings, host: str, port: int, log_level: str) -> int:
    import uvicorn

    import socket

    try:  # a taken port is one error line (deer-worker: config: ...), not uvicorn's exit with a log
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise errors.ConfigError(f"gateway cannot listen on {host}:{port} ({exc.strerror}): "
                                 "free the port or pass --port") from None
    app, gateway = build_app(config, settings)
    log.info("gateway on http://%s:%d -> queue %s (timeout %g s, at most %d waiting, api key %s)", host, port,
             config.queue, settings.timeout, settings.max_waiting, "required" if settings.api_key else "off")
    started = time.monotonic()
    uvicorn.run(app, host=host, port=port, log_level=log_level.lower(), access_log=False,
                timeout_graceful_shutdown=max(5, int(settings.timeout)), lifespan="on")
    log.info("gateway stopped after %.0f s", time.monotonic() - started)
    return 0
