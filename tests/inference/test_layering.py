"""The layers, read from the imports (syntax tree, so lazy imports inside functions count too):
inference turns bytes into detections and knows nothing of queues, serving or tools; the queue glue
knows nothing of serving or tools."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUEUE_LIBRARIES = ("redis", "rq", "fakeredis")


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, absolute (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / "worker" / folder).rglob("*.py"))
    assert files, folder
    return [f"{path.relative_to(ROOT)} imports {module}" for path in files
            for module in sorted(imports_of(path)) if _within(module, forbidden)]


def test_inference_imports_no_queue_serving_or_tools():
    forbidden = QUEUE_LIBRARIES + ("worker.jobqueue", "worker.serve", "worker.tools")
    assert violations("inference", forbidden) == []


def test_jobqueue_imports_no_serving_or_tools():
    assert violations("jobqueue", ("worker.serve", "worker.tools")) == []


@pytest.mark.parametrize("source, caught", [
    ("import redis\n", "redis"),
    ("from rq.job import Job\n", "rq.job"),
    ("def f():\n    import fakeredis\n", "fakeredis"),
    ("from worker.jobqueue import results\n", "worker.jobqueue"),
    ("from ..serve.metrics import WorkerMetrics\n", "worker.serve.metrics"),
    ("from .. import tools\n", "worker.tools"),
])
def test_the_walk_sees_each_way_of_importing(tmp_path, monkeypatch, source, caught):
    module = tmp_path / "worker" / "inference" / "probe.py"
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # a tree holding only the probe
    forbidden = QUEUE_LIBRARIES + ("worker.jobqueue", "worker.serve", "worker.tools")
    assert any(caught in v for v in violations("inference", forbidden)), source
