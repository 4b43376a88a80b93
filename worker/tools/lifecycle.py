"""`deer-worker reload` and `rollback`: set which model every worker serves and wait for their answers.

The desired model is state in Redis (worker/serve/model_state.py): each live worker loads and warms it
beside the one in service, switches between batches, and answers switched or failed with the reason.
Exit codes a script can act on: 0 every live worker switched; 4 some worker failed to load the model
(it keeps serving the old one) or did not answer within --timeout; 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys

RELOAD_FAILED_EXIT = 4


def add_reload_arguments(parser: argparse.ArgumentParser, *, rollback: bool = False) -> None:
    from worker.config import DEFAULT_CONFIG
    from worker.tools.options import positive_number

    if not rollback:
        parser.add_argument("--model", required=True,
                            help="a model folder or IR directory name under the config's models_dir, or a path "
                                 "(every host must have it at that place)")
    parser.add_argument("--timeout", type=positive_number, default=120.0,
                        help="seconds to wait for every live worker's answer (default 120: load + warm-up)")
    parser.add_argument("--redis", dest="redis_url", help="Redis URL (default: the config's)")
    parser.add_argument("--config", help=f"worker.yaml (default {DEFAULT_CONFIG} when present)")
    parser.add_argument("--json", action="store_true", help="print the answers as JSON on stdout")


def live_workers(connection, queue: str) -> list[str]:
    from rq import Queue, Worker

    from worker.jobqueue.connections import SERIALIZER

    return [w.name for w in Worker.all(queue=Queue(queue, connection=connection, serializer=SERIALIZER))]


def reload_workers(connection, model: str, *, queue: str, timeout: float, previous: str | None = None) -> dict:
    """Set the desired model and wait for the answers -> report {model, generation, workers, silent, ok}."""
    from worker.serve.model_state import SWITCHED, set_desired, wait_for_answers

    desired = set_desired(connection, model, previous=previous)
    got, silent = wait_for_answers(connection, desired.generation, lambda: live_workers(connection, queue),
                                   timeout=timeout)
    ok = bool(got) and not silent and all(a["status"] == SWITCHED for a in got.values())
    return {"model": model, "previous": desired.previous, "generation": desired.generation, "workers": got,
            "silent": silent, "ok": ok}


def _report(report: dict, as_json: bool) -> int:
    out = sys.stderr if as_json else sys.stdout
    for worker, a in sorted(report["workers"].items()):
        detail = f"{a['model']} ({a['version']})" if a["status"] == "switched" else a["reason"]
        print(f"{worker}: {a['status']}: {detail}", file=out)
    for worker in report["silent"]:
        print(f"{worker}: no answer", file=out)
    if as_json:
        print(json.dumps(report, indent=2))
    if report["ok"]:
        return 0
    failed = [w for w, a in report["workers"].items() if a["status"] != "switched"] + report["silent"]
    why = "no live worker answered" if not report["workers"] and not report["silent"] else \
        f"{len(failed)} worker(s) did not switch ({', '.join(sorted(failed))}); they keep serving their model"
    print(f"deer-worker: reload_failed: {report['model']}: {why}", file=sys.stderr)
    return RELOAD_FAILED_EXIT


def _connection(args: argparse.Namespace):
    from worker.config import default_config_path, load_config
    from worker.jobqueue.connections import connect

    config = load_config(default_config_path(args.config), overrides={"redis_url": args.redis_url})
    return config, connect(config.redis_url)


def run_reload(args: argparse.Namespace) -> int:
    config, connection = _connection(args)
    return _report(reload_workers(connection, args.model, queue=config.queue, timeout=args.timeout), args.json)


def run_rollback(args: argparse.Namespace) -> int:
    from worker.errors import UsageError
    from worker.serve.model_state import read_desired

    config, connection = _connection(args)
    current = read_desired(connection)
    if current is None or not current.previous:
        raise UsageError("no previous model is recorded: rollback follows a reload or promote")
    report = reload_workers(connection, current.previous, queue=config.queue, timeout=args.timeout,
                            previous=current.model)
    return _report(report, args.json)
