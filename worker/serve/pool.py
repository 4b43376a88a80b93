"""A pool of worker processes: start N, split the cores between them, restart the dead, stop cleanly.

Children are fresh interpreters (`python -m worker run --workers 1 --worker-index i`), never forks
of a process holding OpenVINO state; the parent imports no OpenVINO at all. Settings reach the
children as DEER_WORKER_* environment variables, so a child sees exactly the parent's config.
When a child dies, its jobs are recovered at once (see recovery.py) before it is restarted.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial

from worker.config import ENV_PREFIX, WorkerConfig
from worker.errors import WorkerStartError
from worker.jobqueue.connections import connect
from worker.jobqueue.recovery import recover_jobs, worker_name
from worker.serve.stopping import StopRequest

log = logging.getLogger(__name__)
RESTART_BACKOFF_MAX = 30.0
QUICK_EXIT = 10.0  # seconds: a worker dying sooner than this after its start did not get going
# A worker that dies this many times in a row right after starting has a problem a restart cannot fix
# (model, config, zones): the pool stops, and systemd (if it runs the pool) restarts it with its own backoff.
START_FAILURES_LIMIT = 5


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: the kernel sends it SIGTERM when the pool dies, even by SIGKILL, so no
    orphaned worker goes on consuming the queue unsupervised (it finishes its batch in hand and exits)."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the pool died before the prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def split_cpus(workers: int, cpus: list[int] | None = None) -> list[str]:
    """Disjoint CPU sets per worker when there are enough cores; otherwise no pinning ("")."""
    cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    per = len(cpus) // workers
    if per < 1:
        return [""] * workers
    return [",".join(str(c) for c in cpus[i * per:(i + 1) * per]) for i in range(workers)]


@dataclass
class _Child:
    index: int
    process: subprocess.Popen
    started: float
    restarts: int = 0
    restart_at: float | None = None  # dead, waiting out its backoff: respawned at this time.monotonic()


class WorkerPool:
    def __init__(self, config: WorkerConfig, config_path: str | None, overrides: dict[str, object],
                 workers: int, *, log_level: str = "INFO") -> None:
        self.config, self.config_path, self.workers = config, config_path, workers
        self.log_level = log_level
        cpu_sets = split_cpus(workers)
        threads = config.threads or max(1, len(os.sched_getaffinity(0)) // workers)
        self.child_env: list[dict[str, str]] = []
        for index in range(workers):
            env = dict(os.environ)
            for key, value in overrides.items():
                if value is not None:
                    env[ENV_PREFIX + key.upper()] = str(value)
            env[ENV_PREFIX + "THREADS"] = str(threads)
            if not config.cpus:
                env[ENV_PREFIX + "CPUS"] = cpu_sets[index]
            self.child_env.append(env)
        self.children: dict[int, _Child] = {}
        self.stopping = False

    def _spawn(self, index: int) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "worker", "--log-level", self.log_level, "run", "--workers", "1",
               "--worker-index", str(index)]
        if self.config_path:
            cmd += ["--config", str(self.config_path)]
        return subprocess.Popen(cmd, env=self.child_env[index], preexec_fn=partial(_die_with_parent, os.getpid()))

    def start(self) -> None:
        for index in range(self.workers):
            self.children[index] = _Child(index, self._spawn(index), time.monotonic())
        log.info("pool: started %d worker(s): pids %s", self.workers,
                 [c.process.pid for c in self.children.values()])

    def _recover(self, child: _Child) -> None:
        dead = worker_name(child.index, host_id=self.config.host_id, pid=child.process.pid)
        try:
            recover_jobs(connect(self.config.redis_url), [self.config.queue], lambda name: name == dead)
        except Exception as exc:  # Redis down: the dead worker's jobs come back by TTL later
            log.warning("pool: could not recover jobs of %s now (%s)", dead, exc)

    def check(self) -> None:
        """Reap dead children and respawn each after its backoff (crash loops back off). Never sleeps: one
        crash-looping worker must not hold up the supervision of the others, nor a stop signal."""
        now = time.monotonic()
        for child in self.children.values():
            if self.stopping:
                return
            if child.restart_at is not None:
                if now >= child.restart_at:
                    child.process, child.started, child.restart_at = self._spawn(child.index), time.monotonic(), None
                continue
            code = child.process.poll()
            if code is None:
                continue
            log.warning("pool: worker %d (pid %d) exited with %s", child.index, child.process.pid, code)
            self._recover(child)
            quick = now - child.started < QUICK_EXIT
            child.restarts = child.restarts + 1 if quick else 0
            if child.restarts >= START_FAILURES_LIMIT:
                raise WorkerStartError(
                    f"worker {child.index} died within {QUICK_EXIT:.0f} s of starting {child.restarts} times in a "
                    f"row (last exit status {code}); the lines above say why (model, config, zones): fix that "
                    "and start again")
            child.restart_at = now + (min(RESTART_BACKOFF_MAX, 0.5 * 2 ** child.restarts) if child.restarts else 0.0)

    def _request_stop(self) -> None:
        self.stopping = True

    def stop(self, timeout: float) -> None:
        """SIGTERM each child (each finishes its batch in hand), then SIGKILL what is left."""
        self.stopping = True
        for child in self.children.values():
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                child.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("pool: worker %d did not stop in %.0f s; killing it", child.index, timeout)
                child.process.kill()
                child.process.wait()
                self._recover(child)

    def run_forever(self, stop: StopRequest | None = None) -> int:
        """Supervise until a stop signal (`stop`: the process's, installed before any import), then stop
        the children. A stop that came before this started none."""
        stop = stop or StopRequest().install()
        stop.forward(self._request_stop)
        if not self.stopping:
            self.start()
        try:
            while not self.stopping:
                self.check()
                time.sleep(0.2)
        finally:  # also when a worker keeps failing to start: the others stop cleanly
            self.stop(self.config.job_timeout + 10)
            log.info("pool: stopped")
        return 0
