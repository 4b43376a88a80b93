"""Fast recovery of jobs a dead worker held.

RQ alone notices an abandoned job only when its StartedJobRegistry entry expires (heartbeat TTL)
and some live worker runs maintenance. Here the pool (which sees a child die at once) and every
worker at start-up (which can see dead pids on its own host) expire the dead worker's entries
immediately, and RQ's own cleanup then retries them (if retries are left) or fails them with
AbandonedJobError. The TTL path stays as the fallback for workers on other hosts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Iterable

import redis
from rq.executions import Execution
from rq.registry import StartedJobRegistry
from rq.utils import parse_composite_key

from worker.connections import SERIALIZER

log = logging.getLogger(__name__)
NAME_PREFIX = "deer"


def worker_name(index: int, *, host: str | None = None, pid: int | None = None) -> str:
    """deer-<host>-w<index>.<pid>: unique per process, and tells recovery where it ran."""
    host = (host or socket.gethostname()).replace(".", "_")
    return f"{NAME_PREFIX}-{host}-w{index}.{pid or os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_on_this_host(name: str) -> bool:
    """True for a deer worker name of this host whose process no longer exists."""
    host = socket.gethostname().replace(".", "_")
    prefix = f"{NAME_PREFIX}-{host}-w"
    if not name.startswith(prefix) or "." not in name[len(prefix):]:
        return False
    try:
        pid = int(name.rsplit(".", 1)[1])
    except ValueError:
        return False
    return pid != os.getpid() and not _pid_alive(pid)


def recover_jobs(connection: redis.Redis, queue_names: Iterable[str], is_dead: Callable[[str], bool]) -> int:
    """Expire the started entries of workers for which is_dead(name) holds; returns how many."""
    recovered = 0
    for queue_name in queue_names:
        registry = StartedJobRegistry(queue_name, connection=connection, serializer=SERIALIZER)
        dead_keys = []
        for raw in connection.zrange(registry.key, 0, -1):
            composite = raw.decode() if isinstance(raw, bytes) else raw
            job_id, execution_id = parse_composite_key(composite)
            try:
                owner = Execution.fetch(execution_id, job_id, connection).worker_name
            except Exception:  # execution hash gone: its TTL already ran out, so it is abandoned
                owner = ""
            if not owner or is_dead(owner):
                dead_keys.append(composite)
        if dead_keys:
            connection.zadd(registry.key, {key: 0 for key in dead_keys}, xx=True)
            registry.cleanup(timestamp=1)  # only entries scored 0..1: exactly the ones expired above
            recovered += len(dead_keys)
            log.warning("recovered %d job(s) of dead workers from %s", len(dead_keys), queue_name)
    return recovered
