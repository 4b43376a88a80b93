"""The deliberate breaks the queue tests catch (issue 11: the RQ seam, admission, outcomes, the wire
contract, layering, the crash invariant), run with run.py's machinery:

    .venv/bin/python tests/mutations/queue_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way the queue glue could regress: a job lost between steps, an RQ internal touched
outside rq_compat, a result message or job hash that no longer matches the recorded v1 fixture.
Kept apart from breaks.py so the lists can be run on their own. The crash-point breaks each start a
worker process (about 5 s apiece).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

Q = "tests/jobqueue/"
ADMISSION, OUTCOMES, COMPAT, SEAM = (Q + "test_admission.py::", Q + "test_outcomes.py::", Q + "test_rq_compat.py::",
                                     Q + "test_rq_seam.py::")
CONSUMER, WIRE = Q + "test_consumer.py::", Q + "test_wire_contract.py::"
LAYERS, CRASH = "tests/inference/test_layering.py::", "tests/reliability/test_crash_points.py::"
DRAIN = ("        return self.queue_class.dequeue_any(self._ordered_queues, None, connection=self.connection,\n"
         "                                            job_class=self.job_class, serializer=self.serializer,\n"
         "                                            death_penalty_class=self.death_penalty_class)")

QUEUE_BREAKS = [
    # --- admission and outcomes, without Redis --------------------------------------------------------
    Break("admission-max-age-ignored", "worker/jobqueue/admission.py",
          "if age > max_age:", "if age > max_age * 10:",
          ADMISSION + "test_too_old_expires_with_its_age_measured_from_capture",
          "snapshots older than max_age are inferred"),
    Break("admission-superseded-by-itself", "worker/jobqueue/admission.py",
          "return latest_id != job_id and float(latest_at) > captured_at", "return float(latest_at) > captured_at",
          ADMISSION + "test_superseded_compares_time_and_id",
          "latest_only expires a snapshot its own marker names"),
    Break("admission-disabled-camera-runs", "worker/jobqueue/admission.py",
          '    if not settings.enabled:\n        return Expire(snapshot, settings, "camera_disabled", 0.0, max_age)\n', "",
          ADMISSION + "test_a_disabled_camera_expires_its_snapshots_after_the_freshness_check",
          "a disabled camera's snapshots are inferred"),
    Break("not-json-by-mutated-kind", "worker/jobqueue/admission.py",
          '    return NotJsonError(f"job data is not a valid JSON job ({type(exc).__name__}: {exc})")',
          '    error = PayloadError(f"job data is not a valid JSON job ({type(exc).__name__}: {exc})")\n'
          '    error.kind = "not_json"\n    return error',
          ADMISSION + "test_rejections_carry_the_error_class_of_their_kind",
          "not_json made by changing `kind` on one instance again"),
    Break("refused-by-kind-string", "worker/jobqueue/outcomes.py",
          'return Outcome("refused" if isinstance(error, JobRefusedError) else "failed"',
          'return Outcome("refused" if kind in ("forbidden_function", "not_json") else "failed"',
          OUTCOMES + "test_refused_is_decided_by_error_class_not_by_kind",
          "refused decided by matching kind strings"),
    Break("consumer-admission-escapes", "worker/jobqueue/consumer.py",
          "        except Exception as exc:  # noqa: BLE001 - e.g. a garbled latest marker: one job never stops the "
          "worker\n            verdict = admission.Reject(item.snapshot, item.settings, admission.not_json(exc))\n", "",
          CONSUMER + "test_a_garbled_latest_marker_fails_its_job_and_the_worker_goes_on",
          "one job's odd data stops the RQ loop"),
    # --- the RQ seam ------------------------------------------------------------------------------------
    Break("register-leaves-intermediate-entry", "worker/jobqueue/rq_compat.py",
          "                pipe.lrem(queue.intermediate_queue_key, 1, job.id)", "                pass",
          COMPAT + "test_register_started_is_rqs_prepare_execution_in_one_round_trip",
          "a started job also stays in RQ's intermediate list (recovery would requeue it: run twice)"),
    Break("expire-scores-in-the-future", "worker/jobqueue/rq_compat.py",
          "{member: 0 for member in members}", "{member: time.time() + 100 for member in members}",
          COMPAT + "test_expire_started_entries_abandons_exactly_those_through_rqs_cleanup",
          "recovery's expiry no longer abandons the dead worker's jobs"),
    Break("heartbeat-never-skipped", "worker/jobqueue/rq_compat.py",
          "if timeout is None and time.monotonic() - self._full_heartbeat_at < self.heartbeat_repeat:", "if False:",
          CONSUMER + "test_repeated_heartbeats_are_skipped_but_the_worker_key_never_runs_short",
          "the folded heartbeat sends every repeat again"),
    Break("job-beat-does-not-rearm", "worker/jobqueue/rq_compat.py",
          '            if timeout is not None:\n                self._full_heartbeat_at = float("-inf")',
          "            pass",
          COMPAT + "test_heartbeat_is_folded_and_a_repeat_skipped_without_running_short",
          "after a job's short beat the full beat is skipped: the worker key runs short"),
    Break("accidental-rq-override", "worker/jobqueue/consumer.py",
          "    def latest_marker(self, camera_id: str) -> str | None:",
          "    def clean_registries(self):\n        return None\n\n    def latest_marker(self, camera_id: str) -> str | None:",
          COMPAT + "test_our_worker_classes_override_only_what_they_mean_to[DeerWorker]",
          "a consumer method silently replaces one of RQ's"),
    Break("private-rq-override-outside-seam", "worker/jobqueue/consumer.py",
          "    def latest_marker(self, camera_id: str) -> str | None:",
          "    def _set_ip_address(self, connection):\n        self.ip_address = 'x'\n\n"
          "    def latest_marker(self, camera_id: str) -> str | None:",
          SEAM + "test_only_rq_compat_touches_rq_privately",
          "an RQ-private method overridden outside rq_compat"),
    Break("rq-internal-import-outside-seam", "worker/jobqueue/recovery.py",
          "from rq.registry import StartedJobRegistry",
          "from rq.registry import StartedJobRegistry\nfrom rq.utils import parse_composite_key",
          SEAM + "test_only_rq_compat_touches_rq_privately",
          "recovery parses RQ's registry members itself again"),
    # --- layering ---------------------------------------------------------------------------------------
    Break("inference-imports-redis", "worker/inference/detections.py",
          "from __future__ import annotations", "from __future__ import annotations\nimport redis  # noqa",
          LAYERS + "test_inference_imports_no_queue_serving_or_tools",
          "the inference layer learns about Redis"),
    Break("jobqueue-imports-serve", "worker/jobqueue/consumer.py",
          "    def latest_marker(self, camera_id: str) -> str | None:",
          "    def latest_marker(self, camera_id: str) -> str | None:\n        from worker.serve import metrics  # noqa",
          LAYERS + "test_jobqueue_imports_no_serving_or_tools",
          "the queue layer reaches up into serving (lazily)"),
    # --- the wire contract --------------------------------------------------------------------------------
    Break("result-batch-size-float", "worker/jobqueue/results.py",
          '"worker": worker, "batch_size": batch_size,', '"worker": worker, "batch_size": float(batch_size),',
          WIRE + "test_a_v1_job_of_the_old_producer_gets_the_same_result_message",
          "a result field changes its JSON type"),
    Break("result-extra-field", "worker/jobqueue/results.py",
          "    if image_size is not None:", '    message["queue"] = "x"\n    if image_size is not None:',
          WIRE + "test_a_v1_job_of_the_old_producer_gets_the_same_result_message",
          "the result message grows a field"),
    Break("result-confidence-off", "worker/jobqueue/outcomes.py",
          "    settings = settings or CameraSettings()\n",
          "    settings = settings or CameraSettings()\n"
          "    result.detections.confidence[:] = result.detections.confidence * 0.99\n",
          WIRE + "test_a_v1_job_of_the_old_producer_gets_the_same_result_message",
          "detections differ from the recorded ones beyond the JSON rounding"),
    Break("producer-description", "worker/jobqueue/producer.py",
          'description=f"snapshot {camera_id}"', 'description=f"snap {camera_id}"',
          WIRE + "test_todays_producer_writes_what_the_old_one_wrote",
          "the producer writes a different job hash"),
    Break("producer-latest-marker", "worker/jobqueue/producer.py",
          'f"{captured_at}|{rq_job.id}"', 'f"{captured_at}:{rq_job.id}"',
          WIRE + "test_todays_producer_writes_what_the_old_one_wrote",
          "the newest-snapshot marker changes format"),
    Break("job-function-renamed", "worker/tasks.py",
          "def detect_snapshot(payload: dict) -> dict:", "def detect_snapshot_v1(payload: dict) -> dict:",
          WIRE + "test_todays_producer_writes_what_the_old_one_wrote",
          "worker.tasks.detect_snapshot no longer importable at its contract path"),
    # --- the crash invariant -----------------------------------------------------------------------------
    Break("drained-job-unheld", "worker/jobqueue/rq_compat.py", DRAIN,
          DRAIN.replace("        return self.queue_class", "        more = self.queue_class")
          + "\n        if more is not None:\n"
            "            self.connection.lrem(more[1].intermediate_queue_key, 1, more[0].id)\n        return more",
          CRASH + "test_no_job_is_lost_whatever_step_a_worker_dies_at[after_drain_1]",
          "a drained job leaves the intermediate list before it is registered: lost if the worker dies"),
    Break("thread-id-counts-as-worker", "worker/jobqueue/recovery.py",
          "    return tgid == str(pid)", "    return True",
          "tests/jobqueue/test_recovery.py::test_a_pid_reused_as_a_thread_id_is_not_a_live_worker",
          "a dead worker whose pid is now a thread id of another process is taken for alive (its jobs wait for the TTL)"),
    Break("worker-stays-unregistered", "worker/jobqueue/rq_compat.py",
          "        if not registered:\n            self._register_again()", "        pass",
          "tests/jobqueue/test_rq_compat.py::test_a_worker_whose_registration_vanished_registers_again_at_its_next_heartbeat",
          "after Redis came back empty a worker serves on unregistered: /health and rq info do not see it"),
    Break("recovery-forgets-orphans", "worker/jobqueue/recovery.py",
          "        recovered += _rescue_orphans(connection, queue_name)", "        pass",
          CRASH + "test_no_job_is_lost_whatever_step_a_worker_dies_at[after_dequeue]",
          "a taken, unregistered job of a dead worker waits for RQ's minute-long fallback"),
    Break("recovery-forgets-started", "worker/jobqueue/recovery.py",
          "            expire_started_entries(registry, dead)", "            pass",
          CRASH + "test_no_job_is_lost_whatever_step_a_worker_dies_at[after_register_2]",
          "a dead worker's started jobs wait for the heartbeat-TTL fallback"),
    # --- round trips (benchmarks/round_trips.py's counter, which the consumer test uses) ---------------
    Break("round-trip-counter-counts-nothing", "benchmarks/round_trips.py",
          "        count[0] += 1\n", "        count[0] += 0\n",
          CONSUMER + "test_a_job_costs_a_handful_of_round_trips",
          "the round-trip counter misses every checkout: the <= 9 / <= 6 bounds would hold for any worker"),
    # --- the short soak --------------------------------------------------------------------------------
    Break("leak-16kb-per-job", "worker/jobqueue/outcomes.py",
          '    return Outcome("ok", "none", message, camera_label=settings.label, zone_hits=hits, detected=detected)',
          '    ok.__dict__.setdefault("kept", []).append(__import__("os").urandom(16 * 1024))  # pages touched\n'
          '    return Outcome("ok", "none", message, camera_label=settings.label, zone_hits=hits, detected=detected)',
          "tests/reliability/test_soak_short.py::test_short_soak_at_80_percent_of_capacity",
          "each ok job keeps 16 KB for good: the worker's RSS grows past the soak's 5% (the test prints the growth)"),
]

if __name__ == "__main__":
    run.BREAKS = QUEUE_BREAKS
    sys.exit(run.main())
