"""The command line's conventions, shared by every subcommand so a flag name means one thing.

- Images (files or folders) are positional arguments.
- `--json` prints JSON on stdout instead of the human table; logs and progress go to stderr.
- `--out FILE` writes a report file.
The previous release's spellings (`--json FILE`, `--images`, `--image`) still parse, with a
deprecation warning on stderr, until the next release removes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.constants import PRECISIONS
from worker.errors import MissingFileError, PermissionDeniedError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def warn_deprecated(old: str, new: str) -> None:
    print(f"deer-worker: warning: {old} is deprecated and will be removed in the next release; {new}",
          file=sys.stderr)


class _DeprecatedImages(argparse.Action):
    """`--images A B` / `--image A`: appended to the positional images, with a warning."""

    def __call__(self, parser, namespace, values, option_string=None):
        warn_deprecated(option_string, "pass images as positional arguments")
        extra = values if isinstance(values, list) else [values]
        namespace.legacy_images = [*(namespace.legacy_images or []), *extra]


def add_images(parser: argparse.ArgumentParser, help_text: str, *, legacy: str | None = None,
               optional: bool = True, single: bool = False) -> None:
    """Positional images; `legacy` is the option that used to take them ("--images" or "--image")."""
    nargs = "?" if single else ("*" if optional else "+")
    parser.add_argument("images", nargs=nargs, metavar="IMAGE", help=help_text)
    if legacy:
        parser.add_argument(legacy, nargs=1 if single else "+", action=_DeprecatedImages, metavar="IMAGE",
                            help="deprecated spelling of the positional images (warns; removed next release)")
    parser.set_defaults(legacy_images=None)


def images_of(args: argparse.Namespace) -> list[str]:
    """The positional images plus any given with the deprecated option, in that order."""
    given = args.images if isinstance(args.images, list) else [args.images] if args.images else []
    return [*given, *(getattr(args, "legacy_images", None) or [])]


class _JsonFlag(argparse.Action):
    """`--json`: JSON on stdout. `--json FILE` (the previous spelling of `--out FILE`) still writes
    FILE, with a warning; `--json -` (validate's previous spelling of stdout) is `--json`."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", const=True, default=False, **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        if value is True or value == "-":
            if value == "-":
                warn_deprecated("--json -", "use --json")
            namespace.json = True
            return
        if Path(value).suffix.lower() in IMAGE_SUFFIXES:  # never overwrite an image taken for a report name
            parser.error(f"--json takes no file name ({value} looks like an image): put images before --json, "
                         "or write a report with --out FILE")
        warn_deprecated(f"--json {value}", f"use --out {value}")
        namespace.out = value


def add_output(parser: argparse.ArgumentParser, *, report: bool = False) -> None:
    """`--json`, and `--out FILE` where the command writes a report (whose `--json FILE` still parses)."""
    if not report:
        parser.add_argument("--json", action="store_true", help="print JSON on stdout instead of the table")
        return
    parser.add_argument("--json", action=_JsonFlag, metavar="FILE",
                        help="print JSON on stdout instead of the table (progress stays on stderr); "
                             "'--json FILE' is the deprecated spelling of --out FILE")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON report to FILE")


def add_precision(parser: argparse.ArgumentParser, default: str | None, help_text: str) -> None:
    parser.add_argument("--precision", choices=PRECISIONS, default=default, help=help_text)


def require_files(paths: list[str] | list[Path], what: str) -> None:
    """Each path exists (a file or, for images, a folder); else one MissingFileError naming it."""
    for path in paths:
        if not Path(path).exists():
            raise MissingFileError(f"{what} {path} not found: check the path")


def expand_images(paths: list[str] | list[Path], *, missing_ok: bool = False) -> list[Path]:
    """Image files as given, and a folder's JPEG/PNG files (sorted) in its place. A missing path is an
    error, unless `missing_ok` (a command that reports each image's own failure and goes on)."""
    if not missing_ok:
        require_files(paths, "image")
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if path.is_dir() else [path]
    return files


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _number(text: str, kind, what: str):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def confidence(text: str) -> float:
    """A confidence threshold: a number in (0, 1] (a value like 7 would silently find nothing)."""
    value = _number(text, float, "a number in (0, 1]")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def seconds(text: str) -> float:
    """A duration or timeout: a number of seconds >= 0."""
    value = _number(text, float, "a number of seconds")
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, got {text}")
    return value


def positive_number(text: str) -> float:
    """A number > 0 (seconds, milliseconds)."""
    value = _number(text, float, "a number")
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def count(text: str) -> int:
    """A count, a port or an index: a whole number >= 0."""
    value = _number(text, int, "a whole number")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def batch_sizes(text: str) -> list[int]:
    """Comma-separated batch sizes from the worker's drain batches, 1 and 4."""
    values = int_list(text)
    if set(values) - {1, 4}:
        raise argparse.ArgumentTypeError(f"batch sizes are 1 and 4 (the worker's drain batch), got {text!r}")
    return values


def make_dir(path: str | Path, what: str) -> Path:
    """mkdir -p; failing means the place is not writable by us (EACCES, EPERM, or a kernel file system
    such as /proc that answers ENOENT), reported as one clear error."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionDeniedError(f"cannot create {what} {path} ({exc.strerror}): choose a writable folder") \
            from None
    return Path(path)


def add_isa(parser: argparse.ArgumentParser, default: str, why: str) -> None:
    """`--isa`: the CPU kernels the measurements use (worker.evaluation.isa); the flag beats $DEER_WORKER_ISA,
    which beats `default`. main() re-runs the command capped before it does any work (rerun_for_isa)."""
    from worker.evaluation.isa import CLI_NAMES, ENV

    parser.add_argument("--isa", choices=CLI_NAMES, default=None,
                        help=f"oneDNN kernels to measure with: avx2 (the user's CPU, via ONEDNN_MAX_CPU_ISA in a "
                             f"re-run child; a proxy: ratios, not milliseconds) or native (default {default}, "
                             f"or ${ENV}: {why})")
    parser.set_defaults(isa_default=default)


def this_command(argv: list[str], script: str | None = None) -> list[str]:
    """The command line that runs this same command again: the interpreter's own (its -c or -m, its -X
    options) when argv is this process's, else `python -m worker` (or `python SCRIPT`) with argv."""
    if argv == sys.argv[1:] and getattr(sys, "orig_argv", None):
        return [sys.executable, *sys.orig_argv[1:]]
    return [sys.executable, *([script] if script else ["-m", "worker"]), *argv]


def rerun_for_isa(args: argparse.Namespace, command: list[str]) -> int | None:
    """Where the command asked for a cap this process does not run with: probe the cap (it took, capped FP32
    equals uncapped), then run `command` (this same one) as a child with it -> the child's exit code.
    None where this process already runs as asked (the child itself, or native): go on here."""
    from worker.errors import ConfigError
    from worker.evaluation import isa

    if not hasattr(args, "isa_default"):
        return None
    args.isa = isa.resolve(args.isa, args.isa_default)
    if not isa.needs_rerun(args.isa):
        return None
    if args.isa != isa.NATIVE:
        found = isa.probe(args.isa)  # a separate short child: verbose oneDNN output must not slow the measurement
        from worker.tools.progress import note

        # A stage line, on a terminal only (an expected failure stays one line); the capped child's proxy
        # note repeats the probe's summary beside the figures.
        note(found.line())
        if not found.ok:
            raise ConfigError(f"--isa {args.isa}: {'; '.join(found.problems)}")
        return isa.run_capped(command, args.isa, probed=found)
    return isa.run_capped(command, args.isa)


def rerun_or_fail(args: argparse.Namespace, command: list[str]) -> int | None:
    """rerun_for_isa for a script outside the CLI (the benchmarks): an expected failure is one line, exit 2."""
    from worker.errors import DeerWorkerError

    try:
        return rerun_for_isa(args, command)
    except DeerWorkerError as exc:
        print(f"{Path(command[1]).name}: {exc.kind}: {exc}", file=sys.stderr)
        return 2
