"""The deliberate breaks the consumer-loop tests of issue 14 catch (job contract v2, priority, results
published once, overlap, the crash invariant's new steps), run with run.py's machinery:

    .venv/bin/python tests/mutations/consumer_loop_breaks.py [--only NAME] [--list] [--no-baseline]

Each stands for a way the loop could regress: a v2 setting ignored or a v1 worker's job turned v2, a
motion snapshot behind the backlog, a second ok or a late one published, a job taken ahead that a
crash or a slow batch could lose. The crash-point breaks each start a worker process (about 10 s apiece).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

Q = "tests/jobqueue/"
CONTRACT, ADMISSION, PRODUCER, CONSUMER = (Q + "test_contract.py::", Q + "test_admission.py::",
                                           Q + "test_producer.py::", Q + "test_consumer.py::")
CRASH = "tests/reliability/test_crash_points.py::"
DETECTOR = "tests/inference/test_detector.py::"
DRAIN = ("        return self.queue_class.dequeue_any(self._ordered_queues, None, connection=self.connection,\n"
         "                                            job_class=self.job_class, serializer=self.serializer,\n"
         "                                            death_penalty_class=self.death_penalty_class)")

CONSUMER_LOOP_BREAKS = [
    # --- job contract v2 -----------------------------------------------------------------------------
    Break("v1-accepts-settings", "worker/jobqueue/contract.py",
          "allowed = _KEYS | _SETTINGS_KEYS if version == PAYLOAD_VERSION_SETTINGS else _KEYS",
          "allowed = _KEYS | _SETTINGS_KEYS",
          CONTRACT + "test_v2_violations_name_the_field",
          "a v1 payload carries v2 settings, which a v1-only worker would refuse as unknown keys"),
    Break("producer-always-v2", "worker/jobqueue/contract.py",
          "version = PAYLOAD_VERSION_SETTINGS if self.has_settings else PAYLOAD_VERSION",
          "version = PAYLOAD_VERSION_SETTINGS",
          CONTRACT + "test_a_job_without_settings_is_written_as_v1_for_workers_that_speak_only_v1",
          "jobs without settings become v2: workers of today fail them all during a rollout"),
    Break("v2-conf-ignored", "worker/jobqueue/contract.py",
          "        if self.conf is not None:\n            settings = replace(settings, confidence=self.conf)\n", "",
          ADMISSION + "test_a_v2_job_runs_with_its_own_conf_classes_and_camera_override",
          "a request's min_confidence is not honoured"),
    Break("v2-camera-override-ignored", "worker/jobqueue/contract.py",
          'settings = override_settings(base, self.camera, "camera") if self.camera is not None else base',
          "settings = base",
          ADMISSION + "test_a_v2_job_runs_with_its_own_conf_classes_and_camera_override",
          "a request's camera override is dropped"),
    Break("v2-max-age-ignored", "worker/jobqueue/admission.py",
          "max_age = snapshot.max_age if snapshot.max_age is not None else config.max_age",
          "max_age = config.max_age",
          ADMISSION + "test_a_v2_max_age_replaces_the_workers_for_that_job",
          "a live client's timeout does not bound the job"),
    Break("v2-unknown-classes-run", "worker/jobqueue/admission.py",
          "unknown = unknown_classes(settings.classes, class_names) if snapshot.has_settings else []",
          "unknown = []",
          ADMISSION + "test_a_v2_job_asking_for_classes_the_model_lacks_is_rejected_alone",
          "classes the model lacks reach the detector, whose ConfigError fails the whole batch"),
    # --- priority --------------------------------------------------------------------------------------
    Break("priority-ignored", "worker/jobqueue/producer.py",
          'at_front=priority == "high"', "at_front=False",
          CONSUMER + "test_a_high_priority_job_overtakes_the_backlog",
          "a motion snapshot waits behind the interval backlog"),
    Break("priority-unchecked", "worker/jobqueue/producer.py",
          "    if priority not in PRIORITIES:\n", "    if False:\n",
          PRODUCER + "test_high_priority_goes_to_the_front_of_the_one_queue",
          "a misspelt priority silently enqueues at the back"),
    # --- published once --------------------------------------------------------------------------------
    Break("publish-without-ownership", "worker/jobqueue/rq_compat.py",
          "  if not redis.call('ZSCORE', KEYS[1], member) then", "  if false then",
          CONSUMER + "test_a_worker_cut_off_past_its_heartbeat_does_not_publish_late",
          "a worker cut off past its heartbeat publishes late, beside the new run's result"),
    Break("publish-without-marker", "worker/jobqueue/rq_compat.py",
          "  elseif redis.call('GET', marker) == generation then", "  elseif false then",
          CONSUMER + "test_a_rerun_of_a_published_job_publishes_nothing_more",
          "a re-run after a crash between publish and finish publishes a second ok"),
    Break("publish-marker-crash", "worker/jobqueue/rq_compat.py",
          "  elseif redis.call('GET', marker) == generation then", "  elseif false then",
          CRASH + "test_no_job_is_lost_whatever_step_a_worker_dies_at[after_publish]",
          "a real SIGKILL between publish and finish yields two oks for the batch's jobs"),
    Break("publish-marker-any-generation", "worker/jobqueue/rq_compat.py",
          'generation = p.job.created_at.isoformat() if p.job.created_at else ""', 'generation = ""',
          CONSUMER + "test_a_rerun_of_a_published_job_publishes_nothing_more",
          "a caller re-using a job id gets no result for its new job"),
    Break("not-owner-finished-anyway", "worker/jobqueue/consumer.py",
          "                if item.owned:\n", "                if True:\n",
          CONSUMER + "test_a_worker_cut_off_past_its_heartbeat_does_not_publish_late",
          "a run that lost the job still finishes it in RQ under the new owner"),
    Break("not-owner-snapshot-deleted", "worker/jobqueue/consumer.py",
          "if i.owned and i.final and i.snapshot and i.snapshot.snapshot_key]",
          "if i.final and i.snapshot and i.snapshot.snapshot_key]",
          CONSUMER + "test_a_worker_cut_off_past_its_heartbeat_does_not_publish_late",
          "the late run deletes the snapshot the new owner still needs"),
    # --- overlap ---------------------------------------------------------------------------------------
    Break("no-overlap", "worker/jobqueue/consumer.py",
          "        if self.preparer is None or self.stop_was_requested():", "        if True:",
          CONSUMER + "test_the_next_batch_is_taken_while_one_infers_and_its_heartbeat_covers_the_wait",
          "the next batch is taken only after this one ends: the runtime idles through every take"),
    Break("ahead-heartbeat-short", "worker/jobqueue/consumer.py",
          "self.get_heartbeat_ttl(job) + ahead_wait,", "self.get_heartbeat_ttl(job),",
          CONSUMER + "test_the_next_batch_is_taken_while_one_infers_and_its_heartbeat_covers_the_wait",
          "a job taken ahead can count as abandoned while it waits for a slow batch"),
    Break("ahead-batch-dropped", "worker/jobqueue/consumer.py",
          "                    batch = ahead.result() if ahead is not None else None",
          "                    batch = None if ahead is None else ahead.result() and None",
          CONSUMER + "test_the_next_batch_is_taken_while_one_infers_and_its_heartbeat_covers_the_wait",
          "the batch taken ahead is registered and never run"),
    # --- concurrent halves (a backlog's batch on two streams) -------------------------------------------
    Break("concurrent-halves-swapped", "worker/inference/detector.py",
          "for part, out in zip(parts, runner.infer_parts(tensors)):",
          "for part, out in zip(parts, runner.infer_parts(tensors)[::-1]):",
          DETECTOR + "test_a_batch_of_three_or_four_runs_as_two_concurrent_halves_with_the_one_stream_results",
          "each half of the batch gets the other half's detections"),
    Break("concurrent-never-used", "worker/inference/detector.py",
          "if concurrent is not None and len(chunk) > concurrent.batch:", "if False:",
          DETECTOR + "test_a_batch_of_three_or_four_runs_as_two_concurrent_halves_with_the_one_stream_results",
          "the second compiled model costs memory and start time and never runs"),
    Break("concurrent-on-one-thread", "worker/inference/detector.py",
          "if min(self.options.threads or cores, cores) < CONCURRENT_STREAMS:", "if cores < CONCURRENT_STREAMS:",
          DETECTOR + "test_one_inference_thread_keeps_the_one_stream_batch",
          "a one-thread pool worker compiles two streams: oversubscribed cores, a second model for nothing"),
    Break("concurrent-failure-fails-batch", "worker/inference/runtime.py",
          "                outputs.append(request.get_output_tensor(0).data.copy())\n"
          "            except RuntimeError as exc:\n                outputs.append(exc)",
          "                outputs.append(request.get_output_tensor(0).data.copy())\n"
          "            except RuntimeError as exc:\n                raise exc",
          DETECTOR + "test_a_failing_infer_request_fails_only_its_half_of_the_batch",
          "one failed infer request fails the whole batch"),
    Break("concurrent-failure-not-retried", "worker/jobqueue/consumer.py",
          "self.fail(item, result, retry=not isinstance(result, InputError))", "self.fail(item, result, retry=False)",
          CONSUMER + "test_a_failing_infer_request_fails_only_its_half_of_the_batch_and_rq_retries_it",
          "a half batch's runtime failure is final, as if its snapshots were bad input"),
    # --- the crash invariant's new steps (the batch taken ahead) -------------------------------------
    Break("ahead-drained-unheld", "worker/jobqueue/rq_compat.py", DRAIN,
          DRAIN.replace("        return self.queue_class", "        more = self.queue_class")
          + "\n        if more is not None:\n"
            "            self.connection.lrem(more[1].intermediate_queue_key, 1, more[0].id)\n        return more",
          CRASH + "test_no_job_is_lost_whatever_step_a_worker_dies_at[after_dequeue_ahead]",
          "a job the preparation thread took leaves the intermediate list before it is registered"),
    Break("ahead-started-not-recovered", "worker/jobqueue/recovery.py",
          "            expire_started_entries(registry, dead)", "            pass",
          CRASH + "test_no_job_is_lost_whatever_step_a_worker_dies_at[after_prepare_ahead]",
          "the jobs taken ahead of a dead worker wait for the heartbeat-TTL fallback"),
]

if __name__ == "__main__":
    run.BREAKS = CONSUMER_LOOP_BREAKS
    sys.exit(run.main())
