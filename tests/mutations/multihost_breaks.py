"""The deliberate breaks the several-hosts tests catch (issue 19: host identity, the settings, Sentinel
URLs over TLS, durable enqueue under a split brain, the partition bound), run with run.py's machinery:

    .venv/bin/python tests/mutations/multihost_breaks.py [--only NAME] [--list] [--no-baseline]

The partition break runs the whole cut-off scenario (about a minute), the cut-off primary ~20 s, the TLS
one a worker's model load; the others take seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402
from breaks import Break  # noqa: E402

M = "tests/multihost/"
IDENTITY, SETTINGS, SENTINEL, PARTITION = (M + "test_host_identity.py::", M + "test_settings.py::",
                                           M + "test_sentinel.py::", M + "test_partition.py::")

MULTIHOST_BREAKS = [
    Break("name-without-host-id", "worker/jobqueue/recovery.py",
          "    ident = host_id or machine_id()", '    ident = ""',
          IDENTITY + "test_a_live_worker_on_another_host_with_the_same_hostname_is_not_recovered",
          "two hosts with one hostname share a name form: a live worker elsewhere is recovered as dead"),
    Break("configured-host-id-ignored", "worker/jobqueue/recovery.py",
          "    ident = host_id or machine_id()", "    ident = machine_id()",
          IDENTITY + "test_names_carry_hostname_and_host_identity_and_only_this_hosts_dead_are_dead",
          "worker.yaml host_id has no effect"),
    Break("heartbeat-margin-constant", "worker/jobqueue/consumer.py",
          "+ self.config.heartbeat_margin", "+ 10",
          SETTINGS + "test_the_settings_reach_the_rq_worker", "heartbeat_margin is read but not used"),
    Break("maintenance-interval-constant", "worker/jobqueue/consumer.py",
          'kwargs.setdefault("maintenance_interval", config.maintenance_interval)',
          'kwargs.setdefault("maintenance_interval", 10)',
          SETTINGS + "test_the_settings_reach_the_rq_worker", "maintenance_interval is read but not used"),
    Break("worker-ttl-unchecked", "worker/config.py",
          "        if self.worker_ttl < C.MIN_WORKER_TTL:", "        if False:",
          SETTINGS + "test_bad_values_are_refused_by_name[worker_ttl-15]", "a worker_ttl RQ cannot honour is taken"),
    Break("sentinel-scheme-refused", "worker/config.py",
          '"unix://", "redis+sentinel://", "rediss+sentinel://")', '"unix://")',
          SENTINEL + "test_connect_and_the_config_take_a_sentinel_url", "worker.yaml refuses a Sentinel URL"),
    Break("sentinel-db-dropped", "worker/jobqueue/connections.py",
          "    db = int(path[1]) if len(path) == 2 else 0", "    db = 0",
          SENTINEL + "test_sentinel_url_names_sentinels_service_db_auth_and_tls", "/service/3 serves db 0"),
    Break("sentinel-url-as-plain-redis", "worker/jobqueue/connections.py",
          "    if urlsplit(url).scheme in SENTINEL_SCHEMES:", "    if False:",
          SENTINEL + "test_connect_and_the_config_take_a_sentinel_url", "connect() hands a Sentinel URL to from_url"),
    Break("durable-without-wait", "worker/jobqueue/producer.py",
          "    if durable:\n        confirm_replicated(connection, rq_job.id, wait_replicas, wait_timeout_ms)\n", "",
          SENTINEL + "test_durable_enqueue_is_confirmed_by_a_replica_and_idempotent_by_job_id",
          "a durable enqueue reports success with no replica holding the job"),
    Break("durable-not-idempotent", "worker/jobqueue/producer.py",
          "        if _exists(connection, job_id):", "        if False:",
          SENTINEL + "test_durable_enqueue_is_confirmed_by_a_replica_and_idempotent_by_job_id",
          "a retried durable enqueue queues the job twice"),
    Break("wait-shortfall-ignored", "worker/jobqueue/producer.py",
          "    if acknowledged < replicas:", "    if False:",
          SENTINEL + "test_a_cut_off_primary_loses_acknowledged_plain_jobs_and_no_durable_one",
          "a durable enqueue the cut-off primary alone holds is acknowledged, and lost when it is demoted"),
    Break("rediss-sentinel-in-plain-text", "worker/jobqueue/connections.py",
          '        tls["ssl"] = True', "        pass",
          SENTINEL + "test_rediss_sentinel_url_runs_a_job_over_tls_and_a_wrong_ca_is_one_line",
          "rediss+sentinel:// talks plain text to TLS Sentinels and Redis"),
    Break("sentinel-failure-reason-dropped", "worker/jobqueue/connections.py",
          '                reasons.append(f"{where}: {type(exc).__name__}: {exc}")', "                reasons.append(where)",
          SENTINEL + "test_rediss_sentinel_url_runs_a_job_over_tls_and_a_wrong_ca_is_one_line",
          "a wrong CA reads the same as a Sentinel that is down"),
    Break("heartbeat-margin-ignored-across-hosts", "worker/jobqueue/consumer.py",
          "+ self.config.heartbeat_margin", "+ 60",
          PARTITION + "test_a_cut_off_hosts_jobs_run_elsewhere_within_the_documented_bound",
          "a cut-off host's jobs wait RQ's minute, not the documented bound"),
    Break("partition-second-ok-unchecked", "benchmarks/multihost/partition.py",
          "        if twice:", "        if False:",
          PARTITION + "test_the_long_runs_verdict_passes_this_round_and_names_each_broken_guarantee",
          "partition.py (and so long_runs.py) passes a round in which a job id got two oks"),
    Break("failover-plain-loss-on-kill-ignored", "benchmarks/multihost/failover.py",
          '(mode == "durable" or r["fault"] == "kill")', 'mode == "durable"',
          SENTINEL + "test_a_cut_off_primary_loses_acknowledged_plain_jobs_and_no_durable_one",
          "failover.py --fault kill passes with acknowledged plain jobs lost"),
]

if __name__ == "__main__":
    run.BREAKS = MULTIHOST_BREAKS
    sys.exit(run.main())
