"""The package's modules import one another in one direction: no cycle, counting imports inside
functions too (a cycle hidden in a function is still a cycle a reader has to untangle); and a
command loads only what its own stage needs."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT / "src") if path.is_relative_to(ROOT / "src") else path.relative_to(ROOT)
    return ".".join(rel.with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / "src" / "gancls").glob("*.py")) + sorted((ROOT / "flows").glob("*.py"))
    names = {_module(p): p for p in paths}
    graph = {}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            deps |= {t for t in targets if t in names and t != name}
        graph[name] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_src_and_flows():
    graph = import_graph()
    assert "gancls.raw" in graph and "gancls.layouts" in graph["gancls.raw"]  # the graph is read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_data_stage_starts_without_torch():
    """`gancls make-sample`, `validate` and `prepare` need neither torch nor torchvision: building the
    command line and importing their modules must not load them (about 4 s per stage on 2 cores)."""
    code = (
        "import sys; from gancls.cli import build_parser; build_parser().parse_args(['validate']); "
        "import gancls.synthetic, gancls.validate, gancls.prepare; "
        "print(' '.join(m for m in ('torch', 'torchvision', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"
