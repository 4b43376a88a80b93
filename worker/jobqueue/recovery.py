"""Fast recovery of jobs a dead worker held.

RQ alone notices an abandoned job only when its StartedJobRegistry entry expires (heartbeat TTL)
and some live worker runs maintenance. Here the pool (which sees a child die at once) and every
worker at start-up (which can see dead pids on its own host) expire the dead worker's entries
immediately, and RQ's own cleanup then retries them (if retries are left) or fails them with
AbandonedJobError. The TTL path stays as the fallback for workers on other hosts.

A worker's name carries its host's identity (hostname and machine id, or the configured host_id): two
hosts can share a hostname and, in containers, pids, and a live worker elsewhere must never look dead here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path

import redis
from rq.queue import Queue
from rq.registry import StartedJobRegistry

from worker import constants as C
from worker.jobqueue.connections import SERIALIZER
from worker.jobqueue.contract import DeerJob
from worker.jobqueue.rq_compat import (execution_owner, expire_started_entries, intermediate_job_ids,
                                       requeue_from_intermediate, started_entries)

log = logging.getLogger(__name__)
NAME_PREFIX = "deer"
ORPHAN_GRACE = 1.0  # s; a live worker registers a job it took within milliseconds


@cache
def machine_id() -> str:
    """This host's machine id (systemd's /etc/machine-id), shortened; "" where there is none."""
    for path in C.MACHINE_ID_FILES:
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text:
            return text[:C.HOST_ID_LENGTH]
    return ""


def host_prefix(host_id: str = "") -> str:
    """deer-<hostname>-<host id>-w: what every worker name of this host starts with."""
    host = socket.gethostname().replace(".", "_")
    ident = host_id or machine_id()
    return f"{NAME_PREFIX}-{host}-{ident}-w" if ident else f"{NAME_PREFIX}-{host}-w"


def worker_name(index: int, *, host_id: str = "", pid: int | None = None) -> str:
    """deer-<hostname>-<host id>-w<index>.<pid>: unique per process across hosts, and tells recovery where
    it ran (host_id: the configured one, "" for the machine id)."""
    return f"{host_prefix(host_id)}{index}.{pid or os.getpid()}"


def _pid_alive(pid: int) -> bool:
    """A process (not merely a thread: kill(tid, 0) succeeds too) with this pid exists here."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: the signal check alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    tgid = next((line.split()[1] for line in status.splitlines() if line.startswith("Tgid:")), str(pid))
    return tgid == str(pid)  # a reused number that is now some process's thread is not the worker


def dead_on_this_host(name: str, host_id: str = "") -> bool:
    """True for a deer worker name of this host (same hostname and host id) whose process no longer exists."""
    prefix = host_prefix(host_id)
    index, dot, pid_text = name[len(prefix):].partition(".")
    if not name.startswith(prefix) or not dot or not index.isdigit() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    return pid != os.getpid() and not _pid_alive(pid)


def recover_jobs(connection: redis.Redis, queue_names: Iterable[str], is_dead: Callable[[str], bool]) -> int:
    """Recover the jobs of workers for which is_dead(name) holds; returns how many.

    Started jobs go through RQ's cleanup (retried, or failed with AbandonedJobError); orphans of RQ's
    intermediate list (taken, never registered: a worker registers and starts a job in one MULTI) go
    back to the queue untouched.
    """
    recovered = 0
    for queue_name in queue_names:
        registry = _started_registry(connection, queue_name)
        dead = [entry for entry in started_entries(registry)
                if not (owner := execution_owner(connection, entry)) or is_dead(owner)]
        if dead:
            expire_started_entries(registry, dead)
            recovered += len(dead)
            log.warning("recovered %d job(s) of dead workers from %s", len(dead), queue_name)
        recovered += _rescue_orphans(connection, queue_name)
    return recovered


def _started_registry(connection: redis.Redis, queue_name: str) -> StartedJobRegistry:
    return StartedJobRegistry(queue_name, connection=connection, serializer=SERIALIZER, job_class=DeerJob)


def _queue(connection: redis.Redis, queue_name: str) -> Queue:
    return Queue(queue_name, connection=connection, serializer=SERIALIZER)


def orphans(connection: redis.Redis, queue_name: str) -> set[str]:
    """Jobs in RQ's intermediate list of `queue_name` that no started-registry entry covers: taken by a
    worker that has not registered them yet (a millisecond window) or never will (it, or Redis, died)."""
    registered = {entry.job_id for entry in started_entries(_started_registry(connection, queue_name))}
    return set(intermediate_job_ids(_queue(connection, queue_name))) - registered


def requeue_orphans(connection: redis.Redis, queue_name: str, suspects: set[str]) -> int:
    """Requeue those of `suspects` (seen orphaned a while ago) that are orphaned still; returns how many.

    RQ's own maintenance fails such jobs only after a minute, and a job whose queued TTL runs out first
    is deleted unrun. A worker stalled between taking and registering a job for longer than the
    caller waited would see it run twice: at least once, never lost.
    """
    if not suspects:
        return 0
    queue = _queue(connection, queue_name)
    rescued = sum(requeue_from_intermediate(queue, job_id) for job_id in suspects & orphans(connection, queue_name))
    if rescued:
        log.warning("requeued %d job(s) taken by a worker that died (or lost Redis) before starting them, on %s",
                    rescued, queue_name)
    return rescued


def _rescue_orphans(connection: redis.Redis, queue_name: str, grace: float = ORPHAN_GRACE) -> int:
    """After a death: entries still unregistered `grace` seconds after they were seen are orphans."""
    suspects = orphans(connection, queue_name)
    if suspects:
        time.sleep(grace)
    return requeue_orphans(connection, queue_name, suspects)
