"""Redis connections (transport only): the one `connect(url)` every part of deer-worker uses.

A single Redis: passwords, ACL users and TLS come in the URL: redis://user:password@host:6379/0,
rediss://... for TLS, unix:///run/redis.sock.

Redis Sentinel (high availability, deploy/README.md "Redis Sentinel on three boxes"):

    redis+sentinel://[user:password@]host1:26379,host2:26379,host3:26379/service_name[/db][?options]
    rediss+sentinel://...   TLS to the Sentinels and to the Redis nodes alike

user:password authenticate to the Redis nodes (the primary and its replicas). Options:
sentinel_username / sentinel_password (the Sentinels' own auth, when they have one: `requirepass` in
sentinel.conf), ssl_ca_certs, ssl_certfile, ssl_keyfile, ssl_cert_reqs (TLS, as for rediss://). The
connection asks a Sentinel for the current primary whenever it opens a socket, and drops a socket whose
server turned replica (READONLY), so a failover looks like a short Redis outage to the worker's
reconnect loop, and to a producer's retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

import redis
from redis.sentinel import MasterNotFoundError, Sentinel
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer  # both sides: job data is JSON, never pickle
SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme -> TLS
DEFAULT_SENTINEL_PORT = 26379
TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password") + TLS_OPTIONS


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)


def parse_sentinel_url(url: str) -> SentinelUrl:
    """redis+sentinel://[user:pass@]h1:26379,h2:26379/service[/db][?options] -> its parts; ValueError names
    what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a Sentinel URL (redis+sentinel:// or rediss+sentinel://): {parts.scheme}://")
    creds, _, hosts = parts.netloc.rpartition("@")
    username, _, password = creds.partition(":")
    sentinels = []
    for address in filter(None, hosts.split(",")):
        host, port = address, DEFAULT_SENTINEL_PORT
        if address.startswith("["):  # [::1]:26379
            host, _, rest = address[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else port
        elif ":" in address:
            host, port_text = address.rsplit(":", 1)
            port = int(port_text)
        sentinels.append((host, port))
    if not sentinels:
        raise ValueError("a Sentinel URL names at least one sentinel host:port")
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError("a Sentinel URL's path is /service_name or /service_name/db")
    db = int(path[1]) if len(path) == 2 else 0
    options = dict(parse_qsl(parts.query))
    unknown = set(options) - set(SENTINEL_OPTIONS)
    if unknown:
        raise ValueError(f"unknown Sentinel URL option(s): {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(SENTINEL_OPTIONS)})")
    return SentinelUrl(sentinels, unquote(path[0]), db, unquote(username) or None,
                       unquote(password) if creds and ":" in creds else None,
                       SENTINEL_SCHEMES[parts.scheme], options)


class _Sentinel(Sentinel):
    """redis-py's Sentinel, with a "no primary" error that says, for each Sentinel, why it gave none
    (redis-py 8 names each Sentinel by its pool's repr and each failure as `network:ConnectionError`:
    a wrong CA or password read the same as a Sentinel that is down)."""

    def discover_master(self, service_name):
        reasons = []
        for number, sentinel in enumerate(self.sentinels):
            kw = sentinel.connection_pool.connection_kwargs
            where = f"{kw.get('host')}:{kw.get('port')}"
            try:
                masters = sentinel.sentinel_masters()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                reasons.append(f"{where}: {type(exc).__name__}: {exc}")
                continue
            state = masters.get(service_name)
            if state and self.check_master_state(state, service_name):
                self.sentinels[0], self.sentinels[number] = sentinel, self.sentinels[0]  # ask it first next time
                return state["ip"], state["port"]
            reasons.append(f"{where}: " + (f"no usable primary ({state.get('flags', '?')})" if state
                                           else "does not monitor this service"))
        raise MasterNotFoundError(f"no Sentinel named a primary for {service_name!r}: " + "; ".join(reasons))


def connect(url: str, *, timeout: float = 5.0, command_timeout: float | None = None) -> redis.Redis:
    """command_timeout bounds every reply (for probes); RQ sets its own for its blocking dequeue."""
    if urlsplit(url).scheme in SENTINEL_SCHEMES:
        return _connect_sentinel(parse_sentinel_url(url), timeout, command_timeout)
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=command_timeout,
                                health_check_interval=30)


def _connect_sentinel(spec: SentinelUrl, timeout: float, command_timeout: float | None) -> redis.Redis:
    tls = {key: spec.options[key] for key in TLS_OPTIONS if key in spec.options}
    if spec.tls:
        tls["ssl"] = True
    sentinel_auth = {"username": spec.options.get("sentinel_username"),
                     "password": spec.options.get("sentinel_password")}
    sentinel = _Sentinel(spec.sentinels, sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                         **{k: v for k, v in sentinel_auth.items() if v}, **tls})
    return sentinel.master_for(spec.service, db=spec.db, username=spec.username, password=spec.password,
                               socket_connect_timeout=timeout, socket_timeout=command_timeout,
                               health_check_interval=30, **tls)


def ping(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
