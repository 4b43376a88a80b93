"""Which model runs is state in Redis, not a process's memory (issue 17).

The desired model (a name under `models_dir`, or a path) is one hash, MODEL_DESIRED_KEY, with a
generation id per change. `deer-worker reload` writes it, PUBLISHes the generation on MODEL_CHANNEL,
and waits for each live worker's answer in MODEL_ANSWERS_PREFIX<generation> (switched / failed, with
the reason). A worker applies the stored state at start (so a pool child or a systemd restart never
goes back to the config's model) and on a notification; it also re-reads the stored state every
MODEL_STATE_RECHECK seconds, so a worker that missed the message while reconnecting still converges.

Switching: ModelSwitcher loads and warms the new model on its own thread, beside the old one; a model
that fails to load or warm is not switched to (the old keeps serving, the answer says why). The
consumer swaps the detector only between batches (`serving` around each run of batches; `pending`
stops taking a batch ahead), so a batch is prepared and inferred by one model, and every result from
the swap on carries the new model. Jobs naming the old model are still served after the swap.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis

from worker.constants import MODEL_ANSWER_TTL, MODEL_ANSWERS_PREFIX, MODEL_CHANNEL, MODEL_DESIRED_KEY, MODEL_STATE_RECHECK

log = logging.getLogger(__name__)
SWITCHED, FAILED = "switched", "failed"
WATCH_SLICE = 0.5  # s: how soon the watch thread sees a stop while it waits for a notification


@dataclass(frozen=True)
class DesiredModel:
    model: str  # as given: a name under models_dir, or a path
    generation: str
    set_at: float
    previous: str = ""  # the model desired before this one: what `deer-worker rollback` returns to


def resolve_model(config, model: str) -> Path:
    """A name under the config's models_dir, else a path (absolute, or relative to the project)."""
    if len(Path(model).parts) == 1:
        under = config.resolve(str(Path(config.models_dir) / model))
        if under.exists():
            return under
    return config.resolve(model)


def set_desired(connection: redis.Redis, model: str, *, previous: str | None = None) -> DesiredModel:
    """Store the desired model (a new generation) and notify the workers. `previous` (default: the model
    desired until now) is kept for rollback."""
    if previous is None:
        current = read_desired(connection)
        previous = current.model if current is not None else ""
    desired = DesiredModel(model, uuid.uuid4().hex, time.time(), previous)
    with connection.pipeline() as pipe:
        pipe.hset(MODEL_DESIRED_KEY, mapping={"model": model, "generation": desired.generation,
                                              "set_at": desired.set_at, "previous": previous})
        pipe.publish(MODEL_CHANNEL, desired.generation)
        pipe.execute()
    return desired


def read_desired(connection: redis.Redis) -> DesiredModel | None:
    raw = {k.decode(): v.decode() for k, v in connection.hgetall(MODEL_DESIRED_KEY).items()}
    if not raw.get("model"):
        return None
    return DesiredModel(raw["model"], raw.get("generation", ""), float(raw.get("set_at", 0)), raw.get("previous", ""))


def answer(connection: redis.Redis, generation: str, worker: str, status: str, *, model: str, version: str = "",
           reason: str = "") -> None:
    key = MODEL_ANSWERS_PREFIX + generation
    with connection.pipeline() as pipe:
        pipe.hset(key, worker, json.dumps({"status": status, "model": model, "version": version,
                                           "reason": reason, "at": time.time()}))
        pipe.expire(key, MODEL_ANSWER_TTL)
        pipe.execute()


def answers(connection: redis.Redis, generation: str) -> dict[str, dict]:
    return {k.decode(): json.loads(v) for k, v in connection.hgetall(MODEL_ANSWERS_PREFIX + generation).items()}


class ModelSwitcher:
    """One worker process's model: the detector in service, and the switch to the desired one.

    `build(path)` makes a loaded, warmed detector (the service's build_detector with the config);
    `on_switch(detector)` tells the rest of the process (metrics' model_loaded).
    """

    def __init__(self, connection_factory: Callable[[], redis.Redis], config, name: str,
                 build: Callable[[Path], object], on_switch: Callable[[object], None] = lambda detector: None):
        self.connection_factory, self.config, self.name = connection_factory, config, name
        self.build, self.on_switch = build, on_switch
        self.detector = None
        self.generation = ""  # of the desired state last applied (or failed)
        self.served_names: tuple[str, ...] = ()  # model names jobs may ask for: the current and the previous
        self._pending: tuple[object, str, str] | None = None  # detector, generation, model as given
        self._lock = threading.Lock()
        self._busy = False  # a run of batches is in hand: swap only when it ends
        self._stop = threading.Event()
        self._worker = None
        self._thread: threading.Thread | None = None

    # --- start ----------------------------------------------------------------------------------
    def start(self) -> object:
        """The first detector: the desired model if one is stored (and loads), else the config's."""
        desired = None
        try:
            desired = read_desired(self.connection_factory())
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("%s: desired model unreadable (%s); starting on the config's, converging later", self.name, exc)
        if desired is not None:
            try:
                self._install(self.build(resolve_model(self.config, desired.model)), desired.generation)
                self._answer(desired, SWITCHED)
            except Exception as exc:  # noqa: BLE001 - any load/warm failure: serve the config's model instead
                log.error("%s: desired model %s failed to load (%s); serving the config's %s", self.name,
                          desired.model, exc, self.config.model)
                self.generation = desired.generation
                self._answer(desired, FAILED, reason=f"{type(exc).__name__}: {exc}")
        if self.detector is None:
            self._install(self.build(Path(self.config.resolve(self.config.model))), self.generation)
        self._thread = threading.Thread(target=self._watch, name="deer-model-state", daemon=True)
        self._thread.start()
        return self.detector

    def stop(self, timeout: float | None = None) -> None:
        """End the watch and wait for its thread: a model it is loading finishes loading first (a compile
        cannot be interrupted), so no thread is inside OpenVINO when the process exits."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def close(self) -> None:
        """After stop(): release the served and any loaded, not yet swapped-in detector (their compiled
        models and threads) while the interpreter is whole."""
        with self._lock:
            pending, self._pending = self._pending, None
            detectors = [self.detector] + ([pending[0]] if pending else [])
            self.detector = None
            if self._worker is not None:
                self._worker.detector = None
        for detector in detectors:
            close = getattr(detector, "close", None)
            if close is not None:
                close()

    # --- the consumer's hooks -------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return self._pending is not None

    @contextmanager
    def serving(self, worker) -> Iterator[None]:
        """Around a run of batches: a loaded model is swapped in before it and after it, never inside."""
        with self._lock:
            self._swap(worker)
            self._busy = True
        try:
            yield
        finally:
            with self._lock:
                self._busy = False
                self._swap(worker)

    def attach(self, worker) -> None:
        """The consumer the next swap updates (a fresh one per RQ loop)."""
        with self._lock:
            self._worker = worker
            worker.detector = self.detector

    # --- inside -----------------------------------------------------------------------------------
    def _install(self, detector, generation: str) -> None:
        previous = self.detector
        self.detector, self.generation = detector, generation
        names = (detector.spec.name,) + ((previous.spec.name,) if previous is not None else ())
        self.served_names = tuple(dict.fromkeys(names))
        self.on_switch(detector)

    def _swap(self, worker) -> None:
        """Under the lock, between batches: the pending detector becomes the worker's."""
        if self._pending is None:
            return
        detector, generation, model = self._pending
        self._pending = None
        self._install(detector, generation)
        if worker is not None:
            worker.detector = detector
        log.info("%s: switched to %s (%s %s)", self.name, model, detector.spec.name, detector.spec.version)
        self._answer(DesiredModel(model, generation, 0), SWITCHED)

    def _answer(self, desired: DesiredModel, status: str, reason: str = "") -> None:
        spec = getattr(self.detector, "spec", None)
        try:
            answer(self.connection_factory(), desired.generation, self.name, status, model=desired.model,
                   version=getattr(spec, "version", "") if status == SWITCHED else "", reason=reason)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            log.warning("%s: could not answer model generation %s (%s)", self.name, desired.generation, exc)

    def _watch(self) -> None:
        """Notifications plus a re-read of the stored state every MODEL_STATE_RECHECK s."""
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.connection_factory().pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(MODEL_CHANNEL)
                self._converge()
                self._wait_for_news(pubsub)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                log.warning("%s: model state watch lost Redis (%s); retrying", self.name, exc)
                pubsub = None
                self._stop.wait(1.0)

    def _wait_for_news(self, pubsub) -> None:
        """Up to MODEL_STATE_RECHECK s for a notification, in short slices so a stop is seen at once."""
        deadline = time.monotonic() + MODEL_STATE_RECHECK
        while not self._stop.is_set() and (left := deadline - time.monotonic()) > 0:
            if pubsub.get_message(timeout=min(WATCH_SLICE, left)) is not None:
                return

    def _converge(self) -> None:
        desired = read_desired(self.connection_factory())
        if desired is None or desired.generation == self.generation or self.pending:
            return
        try:
            detector = self.build(resolve_model(self.config, desired.model))
            if self.detector is not None and tuple(detector.class_names) != tuple(self.detector.class_names):
                log.warning("%s: %s has classes %s, the current model %s", self.name, desired.model,
                            list(detector.class_names), list(self.detector.class_names))
        except Exception as exc:  # noqa: BLE001 - a model that fails to load or warm is not switched to
            log.error("%s: model %s not switched to: %s", self.name, desired.model, exc)
            self.generation = desired.generation
            self._answer(desired, FAILED, reason=f"{type(exc).__name__}: {exc}")
            return
        with self._lock:
            self._pending = (detector, desired.generation, desired.model)
            if not self._busy:  # idle: swap now, no batch is in hand
                self._swap(self._worker)


def wait_for_answers(connection: redis.Redis, generation: str, live_workers: Callable[[], list[str]], *,
                     timeout: float, poll: float = 0.2) -> tuple[dict[str, dict], list[str]]:
    """Each live worker's answer for `generation`, until all answered or `timeout`; -> (answers, silent)."""
    deadline = time.monotonic() + timeout
    while True:
        got = answers(connection, generation)
        silent = sorted(set(live_workers()) - set(got))
        if not silent or time.monotonic() >= deadline:
            return got, silent
        time.sleep(poll)
