"""The job functions a deer worker runs. The worker never imports a job's function by its dotted
path (RQ would import anything it is told to); it compares `func_name` with this allow-list and
handles the payload itself, in batches."""

from __future__ import annotations

from rq.job import Job

from worker.constants import JOB_FUNCTION

ALLOWED_FUNCTIONS = frozenset({JOB_FUNCTION})


class DeerJob(Job):
    """An RQ job that is data only. RQ imports and calls a job's callbacks (on_success, on_failure,
    on_stopped) and sends its webhooks from whatever process handles it, the pool's recovery included;
    whoever enqueues chooses them, so deer processes never run or send them (and workers refuse such jobs)."""

    success_callback = failure_callback = stopped_callback = property(lambda self: None)

    def send_webhooks(self, status, *, exc_string=None) -> None:
        return None

    @property
    def has_hooks(self) -> bool:
        return bool(self._success_callback_name or self._failure_callback_name or self._stopped_callback_name
                    or self.webhooks)


def detect_snapshot(payload: dict) -> dict:  # pragma: no cover - the name is the contract
    """Placeholder body: only the name is used. A DeerWorker handles this job; anything else refuses it."""
    raise RuntimeError("detect_snapshot jobs must be run by `deer-worker run`, not by a plain RQ worker")
