"""`deer-worker promote MODEL.pt --data DATA.yaml [--snapshots DIR] [--version V]`: a retrained checkpoint to
production in one step a training script can act on.

1. export (worker/tools/export.py: the dynamic IRs of both heads, scored against the .pt on --data, and a
   MODEL_CARD.json naming the IR to serve and carrying --version) into a folder under the config's
   models_dir; MODEL may also be a folder `export` wrote already (its card's version is the version);
2. the hard no-loss gate: the candidate and the model in production (the desired model in Redis, else the
   config's `model:`) scored the same way on the --data split through the served path (validate's
   evaluate_model), and neither mAP50 nor mAP50-95 may drop more than validate's limits (0.3 / 0.5 points);
   an export whose every IR loses accuracy against its own .pt fails the gate too;
3. with --snapshots, `compare` of production vs candidate on those stored snapshots (reported, not gated:
   unlabelled snapshots cannot say which model is right);
4. reload: every live worker switches to the candidate (lifecycle.reload_workers), the production model is
   recorded as the previous one, so `deer-worker rollback` returns to it. If a worker fails to switch, the
   desired model is set back to production (a restart must not land on a half-promoted model).

Exit codes: 0 promoted; 3 gate failed (nothing reloaded; the exported folder is kept for a look);
4 reload failed (desired model set back to production); 2 a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from worker.evaluation import gate as accuracy_gate
from worker.evaluation.agreement import summarize
from worker.evaluation.dataset import label_path, load_data_yaml, read_labels
from worker.evaluation.gate import DEFAULT_MAX_DROP_MAP, DEFAULT_MAX_DROP_MAP50
from worker.model.card import CARD_FILE, ModelCard, has_card

PROMOTED_EXIT, GATE_FAILED_EXIT, RELOAD_FAILED_EXIT = 0, 3, 4


def add_arguments(p: argparse.ArgumentParser) -> None:
    from worker.config import DEFAULT_CONFIG
    from worker.tools.options import positive_number

    p.add_argument("model", metavar="MODEL", help="the trained ultralytics .pt (export extra), or a model folder "
                                                  "`deer-worker export` wrote (with its MODEL_CARD.json)")
    p.add_argument("--data", required=True, help="labelled data yaml: the gate scores production and the candidate "
                                                 "on its --split (and export scores the IRs against the .pt on it)")
    p.add_argument("--split", default="val", help="split of --data the gate scores (default val)")
    p.add_argument("--snapshots", help="a folder of stored snapshots: compare production and the candidate on them "
                                       "(reported, not gated)")
    p.add_argument("--version", dest="model_version", help='the version results and /health report, e.g. "YOLO26s v4.1" '
                                                           "(default: the checkpoint's stem)")
    p.add_argument("--name", help="model name for the card (default: the .pt's stem)")
    p.add_argument("--out", help="folder to export into (default <models_dir>/<stem>-<version>); must not hold a "
                                 "model yet: a promoted model is never overwritten, rollback may need it")
    p.add_argument("--int8", action="store_true", help="also export calibrated INT8 IRs (export picks the fastest "
                                                       "within its gate vs the .pt)")
    p.add_argument("--max-drop-map50", type=float, default=DEFAULT_MAX_DROP_MAP50,
                   help="largest mAP50 drop vs production, a fraction (default 0.003 = 0.3 points)")
    p.add_argument("--max-drop-map", type=float, default=DEFAULT_MAX_DROP_MAP,
                   help="largest mAP50-95 drop vs production, a fraction (default 0.005 = 0.5 points)")
    p.add_argument("--timeout", type=positive_number, default=120.0, help="seconds to wait for every live worker's answer")
    p.add_argument("--redis", dest="redis_url", help="Redis URL (default: the config's)")
    p.add_argument("--config", help=f"worker.yaml (default {DEFAULT_CONFIG} when present)")
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout (the steps go to stderr)")


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip("-.") or "model"


def production_model(config, connection) -> str:
    """What serves now, as given: the desired model stored in Redis, else the config's `model:`."""
    from worker.serve.model_state import read_desired

    desired = read_desired(connection)
    return desired.model if desired is not None else config.model


def _reload_name(config, folder: Path) -> str:
    """A folder under models_dir is stored by its name (every host has it there), anything else by path."""
    models_dir = config.resolve(config.models_dir).resolve()
    folder = folder.resolve()
    return folder.name if folder.parent == models_dir else str(folder)


def _export(args: argparse.Namespace, pt: Path, out: Path, log) -> ModelCard:
    from worker.tools import export

    parser = argparse.ArgumentParser(prog="deer-worker export")
    export.add_arguments(parser)
    argv = [str(pt), "--data", args.data, "--val-split", args.split, "--out", str(out),
            "--max-drop-map50", str(args.max_drop_map50), "--max-drop-map", str(args.max_drop_map)]
    argv += ["--version", args.model_version] if args.model_version else []
    argv += ["--name", args.name] if args.name else []
    argv += ["--int8"] if args.int8 else []
    export_args = parser.parse_args(argv)
    real_stdout, sys.stdout = sys.stdout, log  # export prints its card: a step, not the report
    try:
        export.run(export_args)
    finally:
        sys.stdout = real_stdout
    return ModelCard.read(out)


def gate(production: str, candidate: str, args: argparse.Namespace, precision: str) -> tuple[bool, list, dict, str]:
    """validate's scoring of both on the --data split and its gate; -> (passed, [production, candidate] results,
    the candidate's drop, table)."""
    from worker.tools.progress import Progress

    data = load_data_yaml(args.data)
    images = data.images(args.split)
    labels = [read_labels(label_path(i), len(data.names)) for i in images]
    progress = Progress(2 * len(images), "gate")
    results = [accuracy_gate.evaluate_model(m, images, labels, data.names, precision=precision, progress=progress)
               for m in (production, candidate)]
    drop = results[1].drop(results[0])
    passed = accuracy_gate.within_gate(drop, accuracy_gate.gate_limits(args.max_drop_map50, args.max_drop_map))
    return passed, results, drop, accuracy_gate.results_table(results)


def run(args: argparse.Namespace) -> int:
    from worker.config import default_config_path, load_config
    from worker.errors import MissingFileError, UsageError
    from worker.jobqueue.connections import connect
    from worker.serve.model_state import read_desired, resolve_model, set_desired, wait_for_answers
    from worker.tools.lifecycle import live_workers, reload_workers

    log = sys.stderr if args.json else sys.stdout
    config = load_config(default_config_path(args.config), overrides={"redis_url": args.redis_url})
    source = Path(args.model).expanduser()
    is_folder = has_card(source)
    if not is_folder and not (source.is_file() and source.suffix == ".pt"):
        raise MissingFileError(f"{args.model}: not a trained .pt nor a model folder with {CARD_FILE}")
    load_data_yaml(args.data).images(args.split)  # a bad data yaml fails before the export
    snapshots = None
    if args.snapshots:
        from worker.tools.options import expand_images

        snapshots = expand_images([args.snapshots])
        if not snapshots:
            raise UsageError(f"--snapshots {args.snapshots}: no images in it")
    connection = connect(config.redis_url)
    production = production_model(config, connection)  # before the minutes of export: Redis answers
    production_path = resolve_model(config, production)
    if not production_path.exists():
        raise MissingFileError(f"the production model {production} ({production_path}) is not on this host: "
                               "promote gates against it")
    started = time.time()
    report: dict = {"production": production, "data": args.data, "split": args.split}

    if is_folder:
        folder = source.resolve()
        card = ModelCard.read(folder)
        if args.model_version and args.model_version != card.version:
            raise UsageError(f"--version {args.model_version!r}: {folder} is exported already with version "
                             f"{card.version!r}; export again to change it")
    else:
        stem = args.name or source.stem
        folder = Path(args.out).expanduser() if args.out else \
            config.resolve(config.models_dir) / _slug(f"{stem}-{args.model_version or time.strftime('%Y%m%d-%H%M%S')}")
        if has_card(folder):
            raise UsageError(f"{folder} holds an exported model already: promote never overwrites one "
                             "(rollback may need it); give another --version or --out")
        print(f"promote: exporting {source} -> {folder}", file=log, flush=True)
        card = _export(args, source.resolve(), folder, log)
    report["candidate"] = {"folder": str(folder), "name": card.name, "version": card.version, "serve": card.serve}

    # 2. the gate: no loss against production, and no IR that loses against its own .pt
    print(f"promote: gate: {card.version} vs production {production} on {args.data} ({args.split})",
          file=log, flush=True)
    passed, results, drop, table = gate(str(production_path), str(folder), args, config.precision)
    print(table, file=log)
    served = card.irs.get(card.serve, {})
    reasons = []
    if not passed:
        reasons.append(f"drops mAP50 {drop['mAP50'] * 100:.2f} / mAP50-95 {drop['mAP50-95'] * 100:.2f} points vs "
                       f"production (limits {args.max_drop_map50 * 100:g} / {args.max_drop_map * 100:g})")
    if served.get("within_gate") is False:
        reasons.append(f"its served IR {card.serve} is outside export's gate vs its own .pt")
    report["gate"] = {"passed": not reasons, "reasons": reasons,
                      "max_drop": {"mAP50": args.max_drop_map50, "mAP50-95": args.max_drop_map},
                      "models": [{"model": r.model, "name": r.name, "role": role,
                                  "metrics": r.metrics.as_dict(), "drop": r.drop(results[0])}
                                 for role, r in zip(("production", "candidate"), results)]}

    # 3. the stored snapshots, for a person to read (not gated)
    if snapshots and not reasons:
        from worker.tools.compare import compare_models

        rows, models = compare_models(config, str(production_path), str(folder), snapshots)
        report["compare"] = {"models": models,
                             "summary": summarize([r.agreement for r in rows if r.agreement is not None]),
                             "unreadable": [r.image for r in rows if r.error]}
        s = report["compare"]["summary"]
        print(f"promote: compare on {len(snapshots)} snapshots: deer agreement {s['deer_agreement']} "
              f"{s['deer_detected']}, boxes {s['boxes']}", file=log)

    if reasons:
        report.update(status="gate_failed", exit=GATE_FAILED_EXIT, wall_s=round(time.time() - started, 1))
        _print(report, args.json)
        print(f"deer-worker: gate_failed: {card.version} not promoted: {'; '.join(reasons)}; "
              f"{production} keeps serving", file=sys.stderr)
        return GATE_FAILED_EXIT

    # 4. reload every worker; production becomes the previous model (rollback's target)
    name = _reload_name(config, folder)
    print(f"promote: reloading every worker to {name}", file=log, flush=True)
    reload = reload_workers(connection, name, queue=config.queue, timeout=args.timeout, previous=production)
    report["reload"] = reload
    if not reload["ok"]:
        current = read_desired(connection)
        back = set_desired(connection, production, previous=current.previous if current else "")
        got, silent = wait_for_answers(connection, back.generation, lambda: live_workers(connection, config.queue),
                                       timeout=args.timeout)
        report["restored"] = {"model": production, "generation": back.generation, "workers": got, "silent": silent}
        report.update(status="reload_failed", exit=RELOAD_FAILED_EXIT, wall_s=round(time.time() - started, 1))
        _print(report, args.json)
        failed = sorted(w for w, a in reload["workers"].items() if a["status"] != "switched") + reload["silent"]
        print(f"deer-worker: reload_failed: {name}: {len(failed)} worker(s) did not switch "
              f"({', '.join(failed) or 'no live worker'}); the desired model is {production} again",
              file=sys.stderr)
        return RELOAD_FAILED_EXIT
    report.update(status="promoted", exit=PROMOTED_EXIT, wall_s=round(time.time() - started, 1))
    _print(report, args.json)
    print(f"promote: {card.version} serves on {len(reload['workers'])} worker(s); "
          f"`deer-worker rollback` returns to {production}", file=log)
    return PROMOTED_EXIT


def _print(report: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, default=str))
