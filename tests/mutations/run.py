"""Mutation runner: apply each deliberate break of breaks.py, run the test that must catch it, restore.

    .venv/bin/python tests/mutations/run.py              # every break
    .venv/bin/python tests/mutations/run.py --only NAME  # one (repeatable)
    .venv/bin/python tests/mutations/run.py --list

For each break: the test must pass on the unbroken code (the baseline; --no-baseline skips it), the
break's `old` text must occur exactly once in its file, and with the break applied the test must FAIL
(pytest exit 1). The file is restored afterwards, always: also on an error, Ctrl-C or SIGTERM. If the
file was edited by someone else meanwhile, only the break's own text is put back.

Per break it reports caught / MISSED / NOT APPLIED (the old text is gone: update the break) / ERROR (the
test did not run cleanly: baseline failed, collection error, ...). Exit 0 only if every break was caught.
Not collected by pytest: no file here is named test_*.py.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from breaks import BREAKS, Break  # noqa: E402


class Interrupted(Exception):
    pass


def _on_term(signum, frame):  # SIGTERM behaves like Ctrl-C: unwind, restore the file
    raise Interrupted(f"signal {signum}")


def run_test(node: str, timeout: float) -> tuple[int, str, float]:
    """Run one test node id with the project's pytest, markers ignored (a slow test named here runs)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-m", "",
           "--no-header", node]
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except BaseException:  # timeout, Ctrl-C, SIGTERM: end the test's whole process group, then go on
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc.returncode, out, time.monotonic() - start


def apply(b: Break) -> tuple[Path, str] | None:
    path = ROOT / b.file
    text = path.read_text()
    if text.count(b.old) != 1:
        return None
    path.write_text(text.replace(b.old, b.new, 1))
    return path, text


def restore(path: Path, original: str, b: Break) -> None:
    current = path.read_text()
    if current.count(b.new) == 1 and current.replace(b.new, b.old, 1) != original:
        path.write_text(current.replace(b.new, b.old, 1))  # edited meanwhile: undo only the break
    else:
        path.write_text(original)


def check(b: Break, baseline: bool, timeout: float, verbose: bool) -> tuple[str, str]:
    if baseline:
        code, out, _ = run_test(b.test, timeout)
        if code != 0:
            return "ERROR", f"baseline: the test does not pass unbroken (pytest exit {code})\n{out[-1500:]}"
    applied = apply(b)
    if applied is None:
        return "NOT APPLIED", f"{b.file}: the break's old text is not there exactly once"
    path, original = applied
    try:
        code, out, took = run_test(b.test, timeout)
    finally:
        restore(path, original, b)
    tail = out[-1500:] if verbose else ""
    if code == 1:
        return "caught", f"{took:.1f} s" + ("\n" + tail if tail else "")
    if code == 0:
        return "MISSED", f"the test passed with the break applied ({took:.1f} s)"
    return "ERROR", f"pytest exit {code} with the break applied (not a test failure)\n{out[-1500:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this break (repeatable)")
    parser.add_argument("--list", action="store_true", help="list the breaks and exit")
    parser.add_argument("--no-baseline", action="store_true", help="skip running each test unbroken first")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per test run (default 1200)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the failing test's output")
    args = parser.parse_args(argv)
    names = [b.name for b in BREAKS]
    assert len(set(names)) == len(names), "break names must be unique"
    chosen = [b for b in BREAKS if not args.only or b.name in args.only]
    unknown = set(args.only or ()) - set(names)
    if unknown:
        parser.error(f"unknown break(s): {', '.join(sorted(unknown))}; --list shows them")
    if args.list:
        for b in chosen:
            print(f"{b.name:<34} {b.file:<38} {b.test}\n{'':<34} {b.why}")
        return 0
    signal.signal(signal.SIGTERM, _on_term)
    results: list[tuple[Break, str]] = []
    try:
        for b in chosen:
            print(f"{b.name:<34} ...", end=" ", flush=True)
            status, detail = check(b, not args.no_baseline, args.timeout, args.verbose)
            results.append((b, status))
            print(status, detail if status != "caught" or args.verbose else f"({detail})", flush=True)
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}); the file under test was restored", file=sys.stderr)
        return 130
    counts = {s: sum(st == s for _, st in results) for s in ("caught", "MISSED", "NOT APPLIED", "ERROR")}
    print(f"\n{counts['caught']} caught, {counts['MISSED']} missed, {counts['NOT APPLIED']} not applied, "
          f"{counts['ERROR']} errors, of {len(results)} breaks")
    return 0 if counts["caught"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
