"""Defaults and Redis names in one place, so producers, workers and docs agree."""

from __future__ import annotations

# --- payload contract -------------------------------------------------------------------------
PAYLOAD_VERSION = 1  # a job without per-job settings, and every result message
PAYLOAD_VERSION_SETTINGS = 2  # a job carrying per-job settings (conf, classes, camera, max_age)
PAYLOAD_VERSIONS = (PAYLOAD_VERSION, PAYLOAD_VERSION_SETTINGS)  # what this worker accepts
DEFAULT_MAX_SNAPSHOT_BYTES = 8 * 1024 * 1024  # a Ring 1080p JPEG is ~150-400 kB
DEFAULT_MAX_PIXELS = 40_000_000  # 8K is 33 Mpx; anything larger is a bomb, not a camera

# --- detection defaults (the user's production settings) ---------------------------------------
DEFAULT_CONFIDENCE = 0.55
DEFAULT_IOU = 0.65
DEFAULT_MAX_DETECTIONS = 300
LETTERBOX_PAD_VALUE = 114
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILE_GRID = (8, 8)
DEER_CLASS_NAMES = ("deer",)
# Inference precision of non-quantized ops; "default" lets the CPU pick (bf16 where it has it).
PRECISIONS = ("f32", "bf16", "f16", "default")
BATCH_MODES = ("1", "4", "auto")  # "4" and "auto" drain up to 4 queued jobs; "auto" keeps 4 only if it pays

# --- Redis / RQ names ---------------------------------------------------------------------------
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE = "deer-snapshots"
DEFAULT_RESULTS_CHANNEL = "deer:results"
DEFAULT_RESULTS_STREAM = "deer:results:stream"
DEFAULT_RESULTS_STREAM_MAXLEN = 10_000
JOB_FUNCTION = "worker.tasks.detect_snapshot"  # the only function a worker runs
# Snapshot bytes live beside the job, not in it: RQ re-compresses a job's data every time it saves
# the job, which for an inline 300 kB base64 JPEG cost more than the inference itself.
SNAPSHOT_KEY_PREFIX = "deer:snap:"
# hash camera_id -> "captured_at|job_id" of the newest enqueued snapshot (latest_only expires older ones)
LATEST_KEY = "deer:latest"
# deer:published:<job id> = the job's created_at, set with its final result message and kept while a
# run of that job can still happen: no second run publishes again (rq_compat.PublishOnce).
PUBLISHED_KEY_PREFIX = "deer:published:"
# The desired model (issue 17, worker/serve/model_state.py): a hash {model, generation, set_at, previous},
# its change notifications, each worker's answer per generation (kept a day), and how often a worker
# re-reads the stored state in case it missed a notification while reconnecting.
MODEL_DESIRED_KEY = "deer:model:desired"
MODEL_CHANNEL = "deer:model:changes"
MODEL_ANSWERS_PREFIX = "deer:model:answers:"
MODEL_ANSWER_TTL = 24 * 3600
MODEL_STATE_RECHECK = 5.0
# Shadow model (worker.yaml shadow_model / shadow_sample): the candidate's answers where it disagrees with
# the primary's, both side by side, in a capped stream; snapshots waiting for the shadow are capped too
# (a worker that stays busy drops the oldest: deer_worker_shadow_skipped_total{reason="backlog"}).
SHADOW_DISAGREEMENTS_STREAM = "deer:shadow:disagreements"
SHADOW_STREAM_MAXLEN = 1000
SHADOW_PENDING = 4  # snapshots held for the shadow (a few MB): one idle moment's work
SHADOW_MAX_AGE = 60.0  # s; a snapshot held longer is dropped unrun (reason "stale"): the traffic moved on
# Share of wall time the shadow may take: after a run of t s it waits t * (1/share - 1) before the next. Idle
# time is what keeps queueing short: at 80% load a shadow filling the idle 20% raised p99 enqueue->result
# 1.3x (benchmarks/shadow_bench.py); 5% of wall time at most.
SHADOW_MAX_SHARE = 0.05

# The MQTT bridge (worker/serve/mqtt_bridge.py), per client id: its saved results-stream position, the job
# ids it published (de-duplication across restarts) and the cameras it announced to Home Assistant.
MQTT_BRIDGE_KEY_PREFIX = "deer:mqtt:"

# --- job lifetimes (seconds) --------------------------------------------------------------------
DEFAULT_JOB_TIMEOUT = 30  # one snapshot takes tens of ms; 30 s means something is stuck
DEFAULT_MAX_AGE = 10.0  # a snapshot older than this when taken is worthless to a sprinkler
DEFAULT_QUEUED_TTL = 60  # RQ drops a job never started within this (ttl=)
DEFAULT_RESULT_TTL = 3600
DEFAULT_FAILURE_TTL = 7 * 24 * 3600
DEFAULT_RETRIES = 2

# A worker waits at most this long (s) between attempts to reach a lost Redis: back within ~2 s of it.
REDIS_MAX_BACKOFF = 2.0

# Several hosts (issue 19). A started job whose worker went silent is abandoned after its timeout plus
# this margin; a live worker's maintenance (every DEFAULT_MAINTENANCE_INTERVAL s, or as soon as its
# blocking dequeue of worker_ttl - 15 s returns) then retries it: the bound in deploy/README.md.
DEFAULT_HEARTBEAT_MARGIN = 10
# A burst run (a batch job, a CI step) gives up on an unreachable Redis after this many seconds and
# exits 2; a serving worker keeps retrying, since Redis coming back is the normal case.
DEFAULT_BURST_REDIS_WAIT = 10.0
DEFAULT_MAINTENANCE_INTERVAL = 10
DEFAULT_WORKER_TTL = 30
MIN_WORKER_TTL = 16  # RQ's dequeue blocks worker_ttl - 15 s; below 16 it would block 1 s anyway
MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")
HOST_ID_LENGTH = 8  # hex digits of the machine id in a worker's name: readable, and 4e9 hosts apart
# Durable enqueue: how long a producer waits for a replica to acknowledge a job, and the key it writes
# right before WAIT so that WAIT covers the job on whichever pooled connection it runs.
DEFAULT_WAIT_TIMEOUT_MS = 1000
ENQUEUE_FENCE_KEY = "deer:enqueue:fence"

# --- metrics ------------------------------------------------------------------------------------
METRICS_PREFIX = "deer_worker"
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9810
# Seconds; dense around the 40 ms target because a percentile is only as exact as its bucket.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.075,
                   0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
