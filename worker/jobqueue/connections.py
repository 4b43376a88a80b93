"""Redis connections (transport only). Passwords, ACL users and TLS come in the URL:
redis://user:password@host:6379/0, rediss://... for TLS, unix:///run/redis.sock."""

from __future__ import annotations

import redis
from rq.serializers import JSONSerializer

SERIALIZER = JSONSerializer  # both sides: job data is JSON, never pickle


def connect(url: str, *, timeout: float = 5.0, command_timeout: float | None = None) -> redis.Redis:
    """command_timeout bounds every reply (for probes); RQ sets its own for its blocking dequeue."""
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=command_timeout,
                                health_check_interval=30)


def ping(connection: redis.Redis) -> bool:
    try:
        return bool(connection.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
