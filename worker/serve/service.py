"""One worker process: load and warm the model once, serve health/metrics, consume the queue.

Redis going away does not end the process: the RQ loop ends, and this loop reconnects with
backoff and starts a fresh RQ worker around the same warm detector.

Shutdown is ordered so that it cannot abort: a stop signal is a flag from the process's first line
(stopping.StopRequest), honoured between stages; on the way out the threads are stopped and joined
first (model-state watch, shadow loader, health server), then the detectors release their compiled
models, and only then does the process exit with the documented status (0 on a stop, 2 on a failure).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time

import redis
from rq.exceptions import StopRequested
from rq.queue import Queue

from worker.cameras import load_camera_book
from worker.config import WorkerConfig, parse_cpus, redact_url
from worker.jobqueue.connections import SERIALIZER, connect, ping
from worker.constants import REDIS_MAX_BACKOFF
from worker.errors import RedisUnavailableError
from worker.inference.build import build_detector
from worker.inference.detector import Detector
from worker.jobqueue.recovery import dead_on_this_host, recover_jobs, worker_name
from worker.jobqueue.consumer import DeerWorker
from worker.jobqueue.rq_compat import worker_key
from worker.serve.model_state import ModelSwitcher
from worker.serve.stopping import StopRequest

log = logging.getLogger(__name__)


def process_age() -> float:
    """Seconds since this process started, by the kernel's clock (10 ms steps): the interpreter and the
    imports count, which no timer started in Python can see."""
    with open("/proc/self/stat") as f:
        after_name = f.read().rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
    started_ticks = int(after_name[19])  # field 22, starttime, in clock ticks since boot
    return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")


def _start_health(config: WorkerConfig, index: int, detector: Detector, book, name: str,
                  ready: threading.Event):
    """Metrics + /healthz + /readyz on metrics_port + index (0 turns it off)."""
    if not config.metrics_port:
        return None, None
    from worker.serve.health import HealthServer
    from worker.serve.metrics import WorkerMetrics

    metrics = WorkerMetrics(camera_labels=book.labels, class_names=detector.class_names,
                            queues=[config.queue], worker_name=name)
    announce_model(metrics, detector)
    probe = connect(config.redis_url, timeout=1.0, command_timeout=1.0)  # a hung Redis must not hang /healthz
    server = HealthServer(metrics, config.metrics_host, config.metrics_port + index,
                          redis_ping=lambda: ping(probe), ready=ready.is_set)
    server.start()
    return metrics, server


def announce_model(metrics, detector: Detector) -> None:
    """deer_worker_model_loaded: the one series at 1 names the model in service."""
    metrics.set_model(model=detector.spec.name, version=detector.spec.version,
                      precision=f"{detector.spec.weights}/{detector.precision}", batch=detector.max_batch)


def _log_start(name: str, before_model: float, model_seconds: float, detector: Detector) -> None:
    """Where the start went, once, at the first ready (benchmarks/cold_start.py reads this line)."""
    ready_at = process_age()
    phases = {"ready": round(ready_at, 3), "before_model": round(before_model, 3), "model": round(model_seconds, 3),
              "detector": detector.startup.as_dict(),
              "after_model": round(ready_at - before_model - model_seconds, 3)}  # Redis, metrics, recovery, RQ
    log.info("%s: ready %.2f s after the process started; start-up seconds %s", name, ready_at, json.dumps(phases))


def start_shadow(config: WorkerConfig, book, metrics, connection, name: str):
    """The shadow model of worker.yaml's shadow_model, loaded and warmed beside the primary; None without one.
    A shadow that fails to load is logged and left out: the primary serves as if none was configured."""
    if not config.shadow_model or config.shadow_sample <= 0:
        return None
    from worker.serve.model_state import resolve_model
    from worker.serve.shadow import ShadowRunner

    try:
        detector = build_detector(config, model=str(resolve_model(config, config.shadow_model)), batch="1")
        detector.check_cameras(book)
    except Exception as exc:  # noqa: BLE001 - the shadow never keeps the primary from serving
        log.error("%s: shadow model %s not loaded, running without a shadow: %s: %s", name, config.shadow_model,
                  type(exc).__name__, exc)
        return None
    if metrics:
        metrics.set_shadow_model(model=detector.spec.name, version=detector.spec.version)
    log.info("%s: shadow model %s (%s) on %.0f%% of served snapshots, while no job waits", name,
             detector.spec.name, detector.spec.version, config.shadow_sample * 100)
    return ShadowRunner(detector, config.shadow_sample, metrics=metrics, connection=connection)


def run_worker(config: WorkerConfig, index: int = 0, *, burst: bool = False, stop: StopRequest | None = None) -> int:
    """Serve until stopped (0), or until a burst run found the queue empty (0) or Redis unreachable for
    config.burst_redis_wait s (RedisUnavailableError). `stop`: the process's stop request, installed by
    the entry point before any heavy import; one is installed here otherwise."""
    stop = stop or StopRequest().install()
    cpus = parse_cpus(config.cpus)
    if cpus:
        os.sched_setaffinity(0, cpus)  # before OpenVINO starts its threads, so pinning stays inside
    name = worker_name(index, host_id=config.host_id)
    before_model = process_age()  # interpreter, imports, config
    book = load_camera_book(config.resolve(config.zones))
    announced = []  # the metrics, once made: each model switch updates their model_loaded

    def build_checked(model) -> Detector:
        detector = build_detector(config, model=model)
        detector.check_cameras(book)  # a model lacking a camera's classes is not served (nor switched to)
        return detector

    state_connection = connect(config.redis_url)
    # The model in service is the one stored in Redis (deer-worker reload), else the config's.
    switcher = ModelSwitcher(lambda: state_connection, config, name, build=build_checked,
                             on_switch=lambda detector: [announce_model(m, detector) for m in announced])
    consumer: dict = {"shadow": None, "worker": None}
    shadow_loader: threading.Thread | None = None
    server = None
    try:
        if stop.requested:  # during the imports: no model to load
            log.info("%s: stopped (%s) during start-up, before loading the model", name, stop.signal_name)
            return 0
        model_started = time.perf_counter()
        detector = switcher.start()
        model_seconds = time.perf_counter() - model_started
        if stop.requested:
            log.info("%s: stopped (%s) during start-up, before serving", name, stop.signal_name)
            return 0
        log.info("%s: model %s (%s weights, %s inference, batch<=%d) warm: batch1 %.1f ms%s", name,
                 detector.spec.name, detector.spec.weights, detector.precision, detector.max_batch,
                 detector.warmup.batch1_seconds * 1e3,
                 (f", batch4 {detector.warmup.batch4_seconds * 1e3:.1f} ms" if detector.warmup.batch4_seconds else "")
                 + (" (times of an earlier start, batch_timing)" if detector.warmup.remembered else ""))
        connection = connect(config.redis_url)
        ready = threading.Event()
        metrics, server = _start_health(config, index, detector, book, name, ready)
        announced += [metrics] if metrics else []
        del detector  # the switcher owns the detector in service (a reload replaces it)

        # The shadow loads after the worker is ready (on a thread): it is work the first jobs need not wait for.
        def load_shadow() -> None:
            try:
                consumer["shadow"] = start_shadow(config, book, metrics, connection, name)
            except Exception as exc:  # noqa: BLE001 - never the primary's problem
                log.error("%s: shadow not started: %s: %s", name, type(exc).__name__, exc)
                return
            if consumer["worker"] is not None:
                consumer["worker"].shadow = consumer["shadow"]  # read between runs of batches only

        if config.shadow_model:
            shadow_loader = threading.Thread(target=load_shadow, name="deer-shadow-load", daemon=True)
        _serve(config, name, book, burst, stop, switcher, connection, consumer, metrics, ready, shadow_loader,
               lambda: _log_start(name, before_model, model_seconds, switcher.detector))
    finally:
        # Threads first (each joined: none may be inside OpenVINO at exit), then the compiled models.
        stop.forward(None)
        switcher.stop()
        if shadow_loader is not None and shadow_loader.ident is not None:
            shadow_loader.join()
        if server:
            server.stop()
        consumer["worker"] = None
        if consumer["shadow"] is not None:
            consumer["shadow"].close()
        switcher.close()
    log.info("%s: stopped", name)
    return 0


def _serve(config: WorkerConfig, name: str, book, burst: bool, stop: StopRequest, switcher: ModelSwitcher, connection,
           consumer: dict, metrics, ready: threading.Event, shadow_loader: threading.Thread | None,
           log_start) -> None:
    """RQ loops around the warm detector until a stop, the end of a burst, or (burst) Redis gone too long."""
    backoff = 0.5
    unreachable_since: float | None = None
    ready_once = False
    while not stop.requested:
        try:
            # Our own name too: a previous RQ loop that ended on a Redis error left its batch started.
            recover_jobs(connection, [config.queue],
                         lambda owner: owner == name or dead_on_this_host(owner, config.host_id))
            connection.delete(worker_key(name))  # our own stale key from a previous loop, if any
            queue = Queue(config.queue, connection=connection, serializer=SERIALIZER)
            rq_worker = DeerWorker([queue], name=name, connection=connection, detector=switcher.detector,
                                   cameras=book, config=config, metrics=metrics,
                                   model_switcher=switcher, shadow=consumer["shadow"])
            consumer["worker"] = rq_worker
            switcher.attach(rq_worker)
            if not ready_once:
                ready_once = True
                log_start()
            ready.set()
            if metrics:
                metrics.set_ready(True)
            if shadow_loader is not None and shadow_loader.ident is None:  # started once, at the first ready
                shadow_loader.start()
            backoff, unreachable_since = 0.5, None
            # A stop from here until RQ installs its own handlers ends the loop at its first check.
            stop.forward(rq_worker.stop_at_first_check)
            try:
                rq_worker.work(burst=burst, logging_level=logging.getLevelName(log.getEffectiveLevel()))
            except StopRequested:  # RQ's handler on an idle worker, raised before its loop's own catch
                pass
            finally:
                stop.forward(None)
            # RQ's handlers stay installed after work(): the next stop reaches ours again.
            stop.install()
            if burst or rq_worker.stop_was_requested():
                break
            log.warning("%s: RQ loop ended without a stop request (Redis trouble?); restarting it", name)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            unreachable_since = unreachable_since or time.monotonic()
            if burst and time.monotonic() - unreachable_since > config.burst_redis_wait:
                raise RedisUnavailableError(
                    f"{redact_url(config.redis_url)} unreachable for {config.burst_redis_wait:g} s ({exc}); "
                    "start Redis or fix redis_url / --redis") from exc
            log.warning("%s: Redis unavailable (%s); retrying in %.1f s", name, exc, backoff)
        ready.clear()
        if metrics:
            metrics.set_ready(False)
        if not stop.requested:
            _sleep_unless_stopped(stop, backoff)
        backoff = min(backoff * 2, REDIS_MAX_BACKOFF)


def _sleep_unless_stopped(stop: StopRequest, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not stop.requested and (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
