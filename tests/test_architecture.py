"""The architecture contract (README: Layout): layers import downward only, no import cycle, short modules.

Fast and offline: it reads the source, never imports losslab's heavy dependencies.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "losslab"
MAX_LINES = 400


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _lint_imports() -> str:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "lint-imports is missing: install the dev extra (make setup)"
    return exe


def test_import_contract_is_kept():
    """The [tool.importlinter] contracts in pyproject.toml: the layer order and import-free base modules."""
    result = subprocess.run([_lint_imports(), "--no-cache", "--no-logo", "pyproject.toml"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"lint-imports: the architecture contract is broken\n{result.stdout}{result.stderr}"
    assert " kept, 0 broken." in result.stdout, result.stdout


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself), Tarjan's."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or graph.direct_import_exists(importer=node, imported=node):
                    found.append(sorted(component))
    return found


def _describe(graph: grimp.ImportGraph, component: list[str]) -> str:
    members = set(component)
    lines = []
    for importer in component:
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & members):
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"    {importer} -> {imported} (line {detail['line_number']}: {detail['line_contents']})")
    return "\n".join([" <-> ".join(component), *lines])


def test_no_import_cycle():
    """No cycle among losslab's modules, counting imports inside functions and under TYPE_CHECKING."""
    graph = grimp.build_graph("losslab", include_external_packages=False, cache_dir=None)
    assert "losslab.data.dataset" in graph.modules, "grimp did not find losslab's modules"
    cycles = _cycles(graph)
    assert not cycles, "import cycles in losslab:\n" + "\n".join(_describe(graph, c) for c in cycles)


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    long = {path: n for path, n in sizes.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by responsibility): {long}"


def _imported_names(tree: ast.AST) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append((node.lineno, node.module))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.append((node.lineno, str(node.args[0].value)))
    return names


def test_package_does_not_import_bench():
    """bench/ measures the package; the package never depends on it (it is not installed)."""
    offenders = [f"{path.relative_to(ROOT)}:{line}: {name}"
                 for path in _modules()
                 for line, name in _imported_names(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
                 if name.split(".")[0] in ("bench", "measure")]
    assert not offenders, "losslab imports the benchmark code:\n" + "\n".join(offenders)
