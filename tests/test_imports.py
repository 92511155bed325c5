"""The package's modules import one another in one direction: no cycle, counting imports inside
functions too (a cycle hidden in a function is still a cycle a reader has to untangle); each part
(subpackage) imports only the parts below it (docs/ARCHITECTURE.md); no module over 400 lines; and a
command loads only what its own stage needs."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT


def _module(path: Path) -> str:
    rel = path.relative_to(ROOT / "src") if path.is_relative_to(ROOT / "src") else path.relative_to(ROOT)
    return ".".join(rel.with_suffix("").parts).removesuffix(".__init__")


def import_graph() -> dict[str, set[str]]:
    paths = sorted((ROOT / "src" / "gancls").rglob("*.py")) + sorted((ROOT / "flows").glob("*.py"))
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
                if not node.level and base == "gancls":  # `from gancls import x`: the package itself only
                    targets = [f"{base}.{a.name}" for a in node.names]
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
    assert "gancls.data.raw" in graph and "gancls.data.layouts" in graph["gancls.data.raw"]  # the graph is read
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_a_data_stage_starts_without_torch():
    """`gancls make-sample`, `validate` and `prepare` need neither torch nor torchvision: building the
    command line and importing their modules must not load them (about 4 s per stage on 2 cores)."""
    code = (
        "import sys; from gancls.cli import build_parser; build_parser().parse_args(['validate']); "
        "import gancls.data.synthetic, gancls.data.validate, gancls.data.prepare; "
        "print(' '.join(m for m in ('torch', 'torchvision', 'gradio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"


def test_every_command_prints_its_help():
    """`gancls --help` and each `gancls <command> --help` format (argparse reads a bare % in a help text as
    a format: "95% intervals" broke `gancls --help`)."""
    import argparse

    from gancls.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert "compare" in parser.format_help() and len(commands) > 10
    for name, sub in commands.items():
        assert f"gancls {name}" in sub.format_help()


# What each part may import besides itself (docs/ARCHITECTURE.md).  ``gancls`` is the package's
# ``__init__`` (telemetry off); config and files are the base every part stands on.
BASE = {"gancls", "config", "files"}
MAY_IMPORT = {
    "gancls": set(),
    "config": set(),
    "files": set(),
    "models": BASE,
    "data": BASE | {"models"},
    "evaluation": BASE | {"models", "data"},
    "drawing": BASE | {"models", "data"},
    "training": BASE | {"models", "data", "drawing", "evaluation"},
    "runs": BASE | {"models", "data", "training", "evaluation", "drawing"},
    "cli": BASE | {"models", "data", "training", "evaluation", "drawing", "runs"},
}


def part(module: str) -> str:
    """``gancls.data.raw`` -> ``data``; ``gancls.config`` -> ``config``; ``gancls`` -> ``gancls``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a part that its part may not import, as ``importer -> imported``."""
    bad = []
    for name, deps in graph.items():
        if not name.startswith("gancls"):
            continue
        allowed = MAY_IMPORT[part(name)] | {part(name)}
        bad += [f"{name} -> {dep}" for dep in sorted(deps) if dep.startswith("gancls") and part(dep) not in allowed]
    return bad


def test_the_checker_finds_an_import_the_wrong_way():
    graph = {
        "gancls.data.raw": {"gancls.config", "gancls.models.alphabet", "gancls.training.train"},
        "gancls.models.gan": {"gancls.data.prepared"},
        "gancls.training.train": {"gancls.drawing.grids", "gancls.models.gan"},
    }
    assert wrong_way(graph) == ["gancls.data.raw -> gancls.training.train", "gancls.models.gan -> gancls.data.prepared"]


def test_each_part_imports_only_the_parts_below_it():
    graph = import_graph()
    assert {part(n) for n in graph if n.startswith("gancls")} == set(MAY_IMPORT)  # every module is placed
    assert wrong_way(graph) == []


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in [*(ROOT / "src").rglob("*.py"), *(ROOT / "flows").glob("*.py")]
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_a_part_starts_without_its_modules():
    """A subpackage's ``__init__`` names what it holds and imports nothing: importing every part
    loads neither torch nor numpy, Prefect or DVC."""
    code = (
        "import sys, gancls.data, gancls.models, gancls.training, gancls.evaluation, gancls.drawing, gancls.runs; "
        "print(' '.join(m for m in ('torch', 'numpy', 'prefect', 'dvc') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"imported at start: {out.stdout.strip()}"


def test_a_flow_gives_prefect_temporary_server_two_minutes_to_start():
    """Importing a flow (flows/__init__.py runs first) sets Prefect's temporary-server start-up timeout
    before Prefect reads its settings: 20 s, Prefect's own, was too short on 2 busy cores."""
    code = (
        "import flows.sweep\n"
        "from prefect.server.api.server import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as s\n"
        "print(s.value())"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    assert out.stdout.split()[-1] == "120"
