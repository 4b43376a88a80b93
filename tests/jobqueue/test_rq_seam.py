"""Only worker/jobqueue/rq_compat.py touches RQ privately: checked on the syntax tree of every module
under worker/, against the private names the installed RQ itself defines.

The rule, for every module but rq_compat.py:
1. No string literal (f-strings included) starting with "rq:": RQ's key layout is asked of rq_compat.
2. No attribute `x._name` (read, write, call, or getattr/setattr/hasattr by name), and no method or
   class attribute `_name` defined in a class that derives from RQ, where `_name` is a private name of
   RQ: one the installed rq package defines or uses as an attribute (`def _name`, `x._name`). Dunders
   are not private. Exception: `self._name` / `cls._name` inside one of our classes that does not derive
   from RQ: our own objects' private state may share a name with RQ's by chance.
   A class derives from RQ when a base is imported from rq, or is one of our classes that does.
3. None of the public RQ names whose use depends on RQ internals (SEAM_OWNED: the intermediate list,
   the started registry's member layout, executions, registration steps RQ runs itself).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
import rq

ROOT = Path(__file__).resolve().parents[2]
SEAM = Path("worker/jobqueue/rq_compat.py")
# Public names, private meaning: what they return or do is RQ's internal layout or its own bookkeeping.
SEAM_OWNED = frozenset({"intermediate_queue_key", "parse_composite_key", "prepare_for_execution",
                        "prepare_execution", "prepare_job_execution", "redis_worker_namespace_prefix",
                        "dequeue_any", "add_execution"})
SEAM_OWNED_CALLS = frozenset({"rq.executions.Execution.create", "rq.executions.Execution.fetch"})


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@cache
def rq_private_names() -> frozenset[str]:
    names = set()
    for path in Path(rq.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _is_private(node.name):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and _is_private(node.attr):
                names.add(node.attr)
    return frozenset(names)


def _module_name(root: Path, path: Path) -> str:
    return ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _imported_names(tree: ast.Module, module: str) -> dict[str, str]:
    """local name -> dotted origin, for `import a.b as c` and `from a.b import c as d` (relative too)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}.{alias.name}"
    return names


def _dotted(node: ast.expr, imported: dict[str, str], module: str) -> str:
    if isinstance(node, ast.Name):
        return imported.get(node.id, f"{module}.{node.id}")
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, imported, module)}.{node.attr}"
    return "?"


def _parse(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {_module_name(root, path): (path, ast.parse(path.read_text(), str(path)))
            for path in sorted((root / "worker").rglob("*.py"))}


def rq_derived_classes(modules: dict[str, tuple[Path, ast.Module]]) -> set[str]:
    """Dotted names of our classes with an RQ class among their ancestors (to a fixpoint)."""
    bases = {}
    for module, (_, tree) in modules.items():
        imported = _imported_names(tree, module)
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                bases[f"{module}.{node.name}"] = [_dotted(b, imported, module) for b in node.bases]
    derived: set[str] = set()
    while True:
        more = {cls for cls, of in bases.items()
                if cls not in derived and any(b == "rq" or b.startswith("rq.") or b in derived for b in of)}
        if not more:
            return derived
        derived |= more


def violations(root: Path) -> list[str]:
    modules = _parse(root)
    derived = rq_derived_classes(modules)
    private = rq_private_names()
    found = []
    for module, (path, tree) in modules.items():
        if path.relative_to(root) == SEAM:
            continue
        where = lambda node: f"{path.relative_to(root)}:{node.lineno}"  # noqa: E731
        imported = _imported_names(tree, module)

        def visit(node: ast.AST, cls: str | None) -> None:
            if isinstance(node, ast.ClassDef):
                cls = f"{module}.{node.name}"
                for item in node.body:  # what the class defines: an override if RQ has the name
                    defined = ([item.name] if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) else
                               [t.id for t in getattr(item, "targets", [getattr(item, "target", None)])
                                if isinstance(t, ast.Name)])
                    found.extend(f"{where(item)}: {node.name} overrides RQ's private {name}"
                                 for name in defined if cls in derived and name in private)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("rq:"):
                found.append(f"{where(node)}: RQ key literal {node.value!r}")
            elif isinstance(node, ast.Attribute) and node.attr in SEAM_OWNED:
                found.append(f"{where(node)}: uses RQ's internal .{node.attr}")
            elif isinstance(node, ast.Attribute) and _dotted(node, imported, module) in SEAM_OWNED_CALLS:
                found.append(f"{where(node)}: uses RQ's internal {_dotted(node, imported, module)}")
            elif isinstance(node, ast.ImportFrom) and any(a.name in SEAM_OWNED for a in node.names):
                found.append(f"{where(node)}: imports RQ's internal {[a.name for a in node.names]}")
            elif isinstance(node, ast.Attribute) and node.attr in private:
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls") and cls not in derived
                # a module that is not RQ's (os._exit: RQ calls it too, so the name is in its set)
                other_module = (isinstance(node.value, ast.Name) and node.value.id in imported
                                and not _dotted(node.value, imported, module).split(".")[0] == "rq"
                                and "." not in imported[node.value.id])
                if not (own or other_module):
                    found.append(f"{where(node)}: touches RQ's private .{node.attr}")
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                  and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
                  and isinstance(node.args[1], ast.Constant) and node.args[1].value in private):
                found.append(f"{where(node)}: {node.func.id} of RQ's private {node.args[1].value}")
            for child in ast.iter_child_nodes(node):
                visit(child, cls)

        visit(tree, None)
    return found


def test_only_rq_compat_touches_rq_privately():
    assert violations(ROOT) == []


def test_the_rule_sees_rq_classes_and_their_private_names():
    # Guards the guard: were RQ's names or our class tree not read, the test above would pass vacuously.
    assert {"_state", "_ordered_queues", "_finalize_success", "_shutdown_requested_date",
            "_success_callback_name"} <= rq_private_names()
    derived = rq_derived_classes(_parse(ROOT))
    assert {"worker.jobqueue.consumer.DeerWorker", "worker.jobqueue.rq_compat.BatchWorker",
            "worker.jobqueue.contract.DeerJob"} <= derived


def _tree_at(commit: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "archive", commit, "worker"], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


@pytest.mark.skipif(sys.platform != "linux", reason="uses git archive and tar")
def test_the_rule_catches_the_touches_the_seam_replaced(tmp_path):
    """The tree just before the seam (the layout commit) had RQ touches in four modules."""
    before = _tree_at("ed385b7", tmp_path)
    seen = "\n".join(violations(before))
    for touch in ("consumer.py", "_set_ip_address", "_state", "_ordered_queues", "_finalize_success",
                  "Execution.create", "prepare_for_execution", "intermediate_queue_key",
                  "service.py", "rq:worker:", "_shutdown_requested_date", "tasks.py", "_success_callback_name",
                  "recovery.py", "parse_composite_key", "Execution.fetch"):
        assert touch in seen, (touch, seen)
