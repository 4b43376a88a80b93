"""Reports, one way for every tool: the human table on stdout, or on stderr when --json puts the JSON
alone on stdout; the JSON also into --out FILE when given."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from worker.errors import MissingFileError, PermissionDeniedError


def table_stream(as_json: bool) -> TextIO:
    """Where the human table goes: stderr when stdout carries the JSON."""
    return sys.stderr if as_json else sys.stdout


def emit_report(report: dict, *, as_json: bool, out: str | Path | None) -> None:
    """The JSON report on stdout (with --json) and into `out` (with --out)."""
    text = json.dumps(report, indent=2) + "\n"
    if as_json:
        print(text, end="")
    if out:
        write_report(out, text)


def require_report_folder(path: str | Path | None) -> None:
    """A report's folder exists: checked when a command starts, not after minutes of measuring."""
    if path is not None and not Path(path).parent.is_dir():
        raise MissingFileError(f"cannot write {path}: folder {Path(path).parent} does not exist")


def write_report(path: str | Path, text: str) -> None:
    """Write a report file; a missing folder or an unwritable place is one clear error, not a traceback."""
    path = Path(path)
    require_report_folder(path)
    try:
        path.write_text(text)
    except OSError as exc:
        raise PermissionDeniedError(f"cannot write {path} ({exc.strerror}): choose a writable path") from None
