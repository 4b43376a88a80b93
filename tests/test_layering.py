"""The layers, read from the imports (syntax tree, so lazy imports inside functions count too):
- inference turns bytes into detections and knows nothing of queues, serving, tools or evaluation;
- the model card knows nothing above it either (it reads and checks files; inference loads through it);
- the queue glue knows nothing of serving, tools or evaluation;
- evaluation (metrics, agreement, gate, timing, host, reports) is a library: no argparse, no tools, no serving;
- serving never imports a command module (tools);
- no module imports another module's `_private` name, and no two modules import each other, however
  indirectly (a cycle is what made cli.py's imports hide inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUEUE_LIBRARIES = ("redis", "rq", "fakeredis")
LAYERS = {  # folder under worker/ -> what it must not import
    "inference": QUEUE_LIBRARIES + ("worker.jobqueue", "worker.serve", "worker.tools", "worker.evaluation"),
    "model": QUEUE_LIBRARIES + ("worker.jobqueue", "worker.serve", "worker.tools", "worker.evaluation",
                                "worker.inference.runtime", "worker.inference.detector"),
    "jobqueue": ("worker.serve", "worker.tools", "worker.evaluation"),
    "evaluation": ("argparse", "worker.tools", "worker.serve", "worker.jobqueue") + QUEUE_LIBRARIES,
    "serve": ("worker.tools",),
}


def _package_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])


def _from_base(node: ast.ImportFrom, package: str) -> str:
    base = node.module or ""
    if node.level:
        parent = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([base] if base else []))
    return base


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, absolute (relative imports resolved against its package)."""
    package = _package_of(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, package)
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


def private_imports() -> list[str]:
    """`from worker.x import _name` (or `import worker.x as m` ... `m._name`) anywhere under worker/."""
    found = []
    for path in sorted((ROOT / "worker").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        aliases = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _from_base(node, _package_of(path)).startswith("worker"):
                base = _from_base(node, _package_of(path))
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{path.relative_to(ROOT)} imports {base}.{alias.name}")
                    aliases.add(alias.asname or alias.name)  # a module imported from its package
            elif isinstance(node, ast.Import):
                aliases |= {alias.asname for alias in node.names if alias.name.startswith("worker") and alias.asname}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{path.relative_to(ROOT)} uses {node.value.id}.{node.attr}")
    return found


def module_graph() -> dict[str, set[str]]:
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in (ROOT / "worker").rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for module in imports_of(path):
            while module and module not in modules:
                module = module.rpartition(".")[0]
            if module and module not in (name, "worker") and not name.startswith(module + "."):
                deps.add(module)
        graph[name] = deps
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        cycles.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return cycles


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_each_layer_imports_nothing_above_it(folder):
    assert violations(folder, LAYERS[folder]) == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_no_import_cycles():
    assert import_cycles(module_graph()) == []


# --- the walks catch what they are for -------------------------------------------------------------------
def _probe_tree(tmp_path, monkeypatch, files: dict[str, str]) -> None:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)  # a tree holding only the probes


@pytest.mark.parametrize("folder, source, caught", [
    ("inference", "import redis\n", "redis"),
    ("inference", "from rq.job import Job\n", "rq.job"),
    ("inference", "def f():\n    import fakeredis\n", "fakeredis"),
    ("inference", "from worker.jobqueue import results\n", "worker.jobqueue"),
    ("inference", "from ..serve.metrics import WorkerMetrics\n", "worker.serve.metrics"),
    ("inference", "from .. import tools\n", "worker.tools"),
    ("inference", "from worker.evaluation.metrics import box_iou\n", "worker.evaluation"),
    ("model", "from worker.inference.runtime import load_spec\n", "worker.inference.runtime"),
    ("jobqueue", "from worker.evaluation import agreement\n", "worker.evaluation"),
    ("evaluation", "import argparse\n", "argparse"),
    ("evaluation", "def f():\n    from worker.tools.bench import default_models\n", "worker.tools"),
    ("serve", "from worker.tools.compare import compare_models\n", "worker.tools"),
])
def test_the_walk_sees_each_way_of_importing(tmp_path, monkeypatch, folder, source, caught):
    _probe_tree(tmp_path, monkeypatch, {f"worker/{folder}/probe.py": source})
    assert any(caught in v for v in violations(folder, LAYERS[folder])), source


@pytest.mark.parametrize("source, caught", [
    ("from worker.tools.bench import _int_list\n", "worker.tools.bench._int_list"),
    ("def f():\n    from .demo import _wait_for_workers\n", "worker.tools.demo._wait_for_workers"),
    ("from worker.tools import validate\nvalidate._table([])\n", "validate._table"),
])
def test_a_private_import_is_caught(tmp_path, monkeypatch, source, caught):
    _probe_tree(tmp_path, monkeypatch, {"worker/tools/probe.py": source})
    assert any(caught in v for v in private_imports()), private_imports()


def test_a_cycle_through_a_lazy_import_is_caught(tmp_path, monkeypatch):
    _probe_tree(tmp_path, monkeypatch, {
        "worker/tools/export.py": "from worker.tools.validate import gate\n",
        "worker/tools/validate.py": "def run():\n    from worker.tools import export\n",
        "worker/tools/bench.py": "from worker.tools.validate import run\n",
    })
    assert import_cycles(module_graph()) == [["worker.tools.export", "worker.tools.validate"]]
