"""The job function's name is the wire contract: producers enqueue `worker.tasks.detect_snapshot`
(constants.JOB_FUNCTION). The worker never imports a job's function by its dotted path (RQ would import
anything it is told to); admission compares `func_name` with its allow-list and the consumer handles
the payload itself, in batches (worker/jobqueue/)."""

from __future__ import annotations


def detect_snapshot(payload: dict) -> dict:  # pragma: no cover - the name is the contract
    """Placeholder body: only the name is used. A DeerWorker handles this job; anything else refuses it."""
    raise RuntimeError("detect_snapshot jobs must be run by `deer-worker run`, not by a plain RQ worker")
