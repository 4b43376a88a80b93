"""The job functions a deer worker runs. The worker never imports a job's function by its dotted
path (RQ would import anything it is told to); it compares `func_name` with this allow-list and
handles the payload itself, in batches."""

from __future__ import annotations

from worker.constants import JOB_FUNCTION

ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})


def detect_snapshot(payload: dict) -> dict:  # pragma: no cover - the name is the contract
    """Placeholder body: only the name is used. A DeerWorker handles this job; anything else refuses it."""
    raise RuntimeError("detect_snapshot jobs must be run by `deer-worker run`, not by a plain RQ worker")
