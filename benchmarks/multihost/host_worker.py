"""One worker process on a lab host: `deer-worker run`'s own run_worker, settings from DEER_WORKER_*.

    python host_worker.py [HOLD_SECONDS]

HOLD_SECONDS > 0 makes every batch's inference take that long more (a slow job), so the test can cut
the host off while it holds started jobs. Every batch's end prints BATCH_ENDED. The hold is a plain sleep inside the real Detector call,
shorter than the job timeout: the host finishes the jobs and tries to publish them, late.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from worker.config import load_config  # noqa: E402
from worker.inference.detector import Detector  # noqa: E402
from worker.jobqueue.consumer import DeerWorker  # noqa: E402
from worker.serve.service import run_worker  # noqa: E402

BATCH_ENDED = "host_worker: batch ended"


def main() -> int:
    hold = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0
    if hold > 0:
        detect_batch = Detector.detect_batch

        def slow_detect_batch(self, items, *args, **kwargs):
            time.sleep(hold)
            return detect_batch(self, items, *args, **kwargs)

        Detector.detect_batch = slow_detect_batch
    end_batch = DeerWorker.end_batch

    def end_batch_said(self, *args, **kwargs):
        end_batch(self, *args, **kwargs)
        print(BATCH_ENDED, flush=True)  # the test waits for this line: the late publish went or was refused

    DeerWorker.end_batch = end_batch_said
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_worker(load_config(None), 0)


if __name__ == "__main__":
    sys.exit(main())
