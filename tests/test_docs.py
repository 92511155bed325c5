"""The README and docs/*.md: every command line of their ```bash blocks runs in a plain shell and is run
by a named test, or is listed here with the reason it cannot run here; their relative links resolve.

Fast: reads files, runs and imports nothing of the project.  A block of another language (```text for an
output or a diagram) is not for running; a bash block's command lines are its lines less comments and
blank lines, with continuation lines (a trailing backslash) joined.
"""

import ast
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 250

# Command prefix -> the tests that run it ("tests/<file>.py::<function>").  A test shows that it runs the
# line: its source (with the fixtures of its file that it takes) either calls readme_block(...) or
# readme_line(...) (tests/test_pipeline.py) selecting that very line, or holds each string given here and
# every --option of the line.  The longest matching prefix decides; a prefix matches whole words.
PIPELINE = "tests/test_pipeline.py::"
RUN_BY: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "make run": [(PIPELINE + "test_make_run_in_a_plain_shell_reruns_nothing_and_shows_where_the_results_are", ())],
    ".venv/bin/gancls sample --text": [
        (PIPELINE + "test_the_readme_sample_lines_in_a_plain_shell", ()),
        ("tests/drawing/test_draw.py::test_text_command_draws_sentences_of_ones_own", ('"sample"', '"--text"')),
    ],
    ".venv/bin/gancls sample --file": [("tests/drawing/test_draw.py::test_a_typed_colour_is_drawn", ('"sample"',))],
    ".venv/bin/gancls sample --query": [
        ("tests/drawing/test_draw.py::test_sample_command_writes_a_captioned_grid", ('"sample"',)),
        ("tests/drawing/test_draw.py::test_query_without_match_exits_nonzero", ('"sample"',)),
    ],
    ".venv/bin/gancls sample --caption-id": [(PIPELINE + "test_the_readme_sample_lines_in_a_plain_shell", ())],
    "make demo": [(PIPELINE + "test_the_readme_demo_block_in_a_plain_shell", ())],
    ".venv/bin/gancls demo --exp": [(PIPELINE + "test_the_readme_demo_block_in_a_plain_shell", ())],
    "make demo-shot": [(PIPELINE + "test_the_readme_demo_block_in_a_plain_shell", ())],
    ". .venv/bin/activate": [(PIPELINE + "test_the_readme_experiment_block_in_a_plain_shell", ())],
    "dvc exp run -S": [(PIPELINE + "test_the_readme_experiment_block_in_a_plain_shell", ())],
    "dvc metrics diff": [(PIPELINE + "test_the_readme_experiment_block_in_a_plain_shell", ())],
    "dvc plots diff": [(PIPELINE + "test_the_readme_experiment_block_in_a_plain_shell", ())],
    # what `make serve` runs (the Makefile: gancls serve), with --interval for a schedule a test can wait for
    "make serve": [("tests/runs/test_serve.py::test_scheduled_run_reproduces_records_and_compares", ('"serve"',))],
    "prefect work-pool create gancls-process": [
        ("tests/runs/test_serve.py::test_prefect_yaml_deploys_to_a_process_pool", ('"work-pool", "create"',))
    ],
    "GANCLS_ROOT=$PWD prefect deploy --name nightly": [
        ("tests/runs/test_serve.py::test_prefect_yaml_deploys_to_a_process_pool", ("GANCLS_ROOT=", '"deploy"'))
    ],
    ".venv/bin/gancls fetch": [
        (
            "tests/data/test_fetch.py::test_fetch_from_a_local_server_then_validate_and_prepare",
            ('["gancls", "fetch"]',),
        ),
        ("tests/data/test_fetch.py::test_offline_fetch_fails_fast_naming_the_archives", ('["gancls", "fetch"]',)),
    ],
    ".venv/bin/python -m flows.sweep": [
        ("tests/runs/test_sweep.py::test_sweep_stopped_continues_compares_and_reruns_nothing", ('"flows.sweep"',))
    ],
    ".venv/bin/gancls sweep": [
        ("tests/runs/test_sweep.py::test_sweep_stopped_continues_compares_and_reruns_nothing", ('"sweep"',))
    ],
    ".venv/bin/gancls compare": [
        ("tests/runs/test_sweep.py::test_sweep_stopped_continues_compares_and_reruns_nothing", ('"compare"',))
    ],
    "make run-cub": [
        (
            PIPELINE + "test_run_cub_without_data_stops_at_once_and_changes_nothing",
            ("make -o .venv/.installed run-cub",),
        ),
        # what the target runs (the Makefile: gancls experiment --settings configs/reed_cub.yaml), at tiny sizes
        (
            PIPELINE + "test_run_cub_settings_end_to_end_on_a_cub_layout_stand_in",
            ('"experiment", "--settings", "configs/reed_cub.yaml"',),
        ),
    ],
}

TEAM = "needs a team's Prefect server (a remote) for a worker to poll"
DOCKER = "needs Docker (an image, a Docker work pool's worker, a PostgreSQL container)"
K8S = "needs Kubernetes (a cluster, and prefect-kubernetes on the worker)"
NOT_RUN_HERE: dict[str, str] = {
    "make test": "runs this test suite itself: .ci/run runs it on every CI run (test_make_test_is_what_ci_runs)",
    # test_serve.py serves the deployment and starts its runs with prefect.deployments.run_deployment, the
    # call this CLI line makes, not the CLI line itself
    "PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/prefect deployment run": (
        "needs `make serve` running in another shell (a Prefect server and the served deployment)"
    ),
    "export PREFECT_API_URL=http://prefect.example.com:4200/api": TEAM,
    "prefect worker start --pool gancls-process": TEAM,
    "prefect work-pool create gancls-docker": DOCKER,
    "GANCLS_REPO=https://git.example.com/team/gancls.git": DOCKER,
    "prefect worker start --pool gancls-docker": DOCKER,
    "docker run": DOCKER,
    "PREFECT_API_DATABASE_CONNECTION_URL=": DOCKER + ": the server's database is that container's PostgreSQL",
    "prefect work-pool create gancls-k8s": K8S,
    "GANCLS_REPO=... GANCLS_IMAGE=... prefect deploy --name nightly-k8s": K8S,
    "prefect worker start --pool gancls-k8s": K8S,
    ".venv/bin/dvc remote add -d team /path/to/folder": (
        "needs real CUB data in data/ (gancls fetch) to push, and a DVC remote other machines share"
    ),
    ".venv/bin/dvc pull": "needs a DVC remote that holds data/ (pushed where the real CUB data is)",
    ".venv/bin/gancls experiment --settings configs/reed_cub.yaml -S data.source=sample": (
        "needs a GPU: Reed's full sizes (ngf 128, ndf 64) for 600 epochs"
    ),
    "make sweep": (
        "a benchmark-sized run: 9 experiments at make run's size, about an hour on 2 CPU cores "
        "(tests/runs/test_sweep.py runs gancls sweep, which the target calls, at tiny sizes)"
    ),
    ".venv/bin/python benchmarks/learning_sweep.py": (
        "a benchmark: the recipe sweep, 9 experiments at make run's size, about 1.5 h on 2 CPU cores "
        "(tests/runs/test_sweep.py runs gancls sweep, which it calls, at tiny sizes)"
    ),
    ".venv/bin/python benchmarks/train_speed.py": (
        "a benchmark: an epoch at the seed's full sizes, 18.5 images/s on 2 CPU cores (docs/LONG_RUNS.md)"
    ),
    ".venv/bin/python benchmarks/train_speed.py --device cuda": "needs a GPU (--device cuda, bf16, CUDA graphs)",
    ".venv/bin/torchrun --standalone --nproc_per_node=8": "needs 8 GPUs on one node",
    ".venv/bin/torchrun --nnodes=2": "needs two nodes of 8 GPUs each",
}

# The project's tools: in a plain shell only as .venv/bin/<tool> (or through make, or once the block has
# activated the environment).
TOOLS = {"gancls", "dvc", "prefect", "python", "python3", "pip", "torchrun"}
ACTIVATE = {". .venv/bin/activate", "source .venv/bin/activate"}
SHELL_LANGS = {"sh", "shell", "console", "zsh", "shell-session"}  # commands go in ```bash blocks only


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def doc_blocks(lang: str | None = None) -> list[Block]:
    """The fenced blocks of README.md and docs/*.md (README first), of language ``lang`` if given."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", text, re.S | re.M):
            block = Block(path, text.count("\n", 0, m.start()) + 1, m.group(1).strip(), m.group(2))
            if lang is None or block.lang == lang:
                found.append(block)
    return found


def command_lines(text: str) -> list[str]:
    """The command lines of a bash block: continuation lines joined, comment and blank lines left out."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def command_of(line: str) -> str:
    """The line as the shell reads it, without a trailing comment and with its spacing normalised."""
    return shlex.join(shlex.split(line, comments=True))


def doc_commands() -> list[tuple[Block, str]]:
    return [(block, line) for block in doc_blocks("bash") for line in command_lines(block.text)]


def starts_with(line: str, prefix: str) -> bool:
    """``prefix`` begins ``line`` and ends at a word's end (``make run`` is not ``make run-cub``)."""
    if not line.startswith(prefix):
        return False
    rest = line[len(prefix) :]
    return not rest or not (prefix[-1].isalnum() or prefix[-1] in "-_") or not (rest[0].isalnum() or rest[0] in "-_")


def row_of(line: str) -> str | None:
    """The longest prefix of RUN_BY or NOT_RUN_HERE that ``line`` starts with."""
    prefixes = [p for p in (*RUN_BY, *NOT_RUN_HERE) if starts_with(line, p)]
    return max(prefixes, key=len, default=None)


def test_the_readme_is_a_front_door_whose_first_commands_are_make_run_and_make_test():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES, "README.md is a front door: the rest goes to docs/"
    first = next(b for b in doc_blocks() if b.path.name == "README.md")
    assert first.lang == "bash", first.where
    # CI (.ci/run) and users rely on these two, in this order
    assert [command_of(line) for line in command_lines(first.text)][:2] == ["make run", "make test"], first.where


def test_every_command_is_run_by_a_test_or_says_why_it_cannot_run_here():
    assert set(RUN_BY).isdisjoint(NOT_RUN_HERE)
    lines = doc_commands()
    assert len(lines) > 20, "the docs' bash blocks were not found"
    uncovered = [f"{block.where}: {line}" for block, line in lines if row_of(line) is None]
    assert uncovered == [], "add each to RUN_BY (with the test that runs it) or NOT_RUN_HERE (with why):\n" + "\n".join(
        uncovered
    )


def test_every_row_matches_a_command_of_the_docs():
    used = {row_of(line) for _, line in doc_commands()}
    assert sorted(set(RUN_BY) - used) == [] and sorted(set(NOT_RUN_HERE) - used) == []


def function_sources(node_id: str) -> str:
    """The source of the test ``path::name`` and of the functions of its file it takes as arguments (its
    fixtures); fails when there is no such test."""
    rel, name = re.fullmatch(r"(.+?\.py)::(\w+)", node_id).groups()
    path = ROOT / rel
    assert path.is_file(), f"{node_id}: no file {rel}"
    source = path.read_text(encoding="utf-8")
    defs = {n.name: n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    test = defs.get(name.split("[")[0])
    assert test is not None and name.startswith("test_"), f"{node_id}: no test function {name} in {rel}"
    parts = [test, *(defs[a.arg] for a in test.args.args if a.arg in defs)]
    return "\n".join(ast.get_source_segment(source, part) for part in parts)


def selected_by_helpers(source: str) -> list[str]:
    """The command lines that the readme_block(...) and readme_line(...) calls in ``source`` select
    (tests/test_pipeline.py: the first bash block holding the text; the first line starting with it)."""
    selected = []
    for helper, arg in re.findall(r"readme_(block|line)\(\s*(\"[^\"]*\"|'[^']*')\s*\)", source):
        arg = ast.literal_eval(arg)
        if helper == "block":
            block = next((b for b in doc_blocks("bash") if arg in b.text), None)
            selected += command_lines(block.text) if block else []
        else:
            selected += [next((line for _, line in doc_commands() if line.startswith(arg)), "")]
    return [command_of(line) for line in selected if line]


def test_each_test_named_exists_and_runs_its_command():
    wrong = []
    for block, line in doc_commands():
        rows = RUN_BY.get(row_of(line) or "", [])
        options = set(re.findall(r"(?<![\w-])(--[\w-]+)", command_of(line)))
        for node_id, shows in rows:
            source = function_sources(node_id)
            if command_of(line) in selected_by_helpers(source):
                continue
            missing = [s for s in shows if s not in source] + [o for o in sorted(options) if f'"{o}"' not in source]
            if not shows or missing:
                wrong.append(f"{block.where}: {line}\n  {node_id} shows no run of it (missing: {missing or 'all'})")
    assert wrong == [], "\n".join(wrong)


def test_commands_run_in_a_plain_shell():
    """The environment is not active in a plain shell: the project's tools are called as .venv/bin/<tool>,
    through make, or after a line of the block that activates the environment."""
    wrong = []
    for block in doc_blocks("bash"):
        active = False
        for line in command_lines(block.text):
            if command_of(line) in ACTIVATE:
                active = True
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            words, starts = list(lexer), [0]
            starts += [i + 1 for i, w in enumerate(words) if w in {"&&", "||", ";", "|", "&", "(", ")"}]
            for i in starts:
                while i < len(words) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[i]):
                    i += 1  # VAR=value before a command
                word = words[i] if i < len(words) else ""
                tool = word.rsplit("/", 1)[-1]
                if tool in TOOLS and word != f".venv/bin/{tool}" and not active:
                    wrong.append(f"{block.where}: {line}")
    assert wrong == [], "in a plain shell these find no tool (write .venv/bin/<tool>):\n" + "\n".join(wrong)


def test_no_command_hides_in_a_block_of_another_language():
    """Only ```bash blocks are checked above: a command in another fence would escape the checks."""
    prefixes = [*RUN_BY, *NOT_RUN_HERE, ".venv/bin/", "make ", "$ "]
    hidden = [
        f"{block.where} ({block.lang or 'no language'}): {line.strip()}"
        for block in doc_blocks()
        if block.lang != "bash"
        for line in block.text.splitlines()
        if any(starts_with(line.strip(), p) for p in prefixes)
    ]
    assert hidden == [], "a command outside a ```bash block escapes the checks:\n" + "\n".join(hidden)
    assert [b.where for b in doc_blocks() if b.lang in SHELL_LANGS] == [], "commands go in ```bash blocks"


def test_make_test_is_what_ci_runs():
    lines = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    assert "make test" in lines


def slugs(path: Path) -> set[str]:
    """GitHub's anchors of the headings of a markdown file."""
    seen: dict[str, int] = {}
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        if seen[slug]:
            seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def test_relative_links_and_pictures_resolve():
    broken = []
    for doc in DOCS:
        text = re.sub(r"^```.*?^```", "", doc.read_text(encoding="utf-8"), flags=re.S | re.M)
        for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http(s):, mailto:
            file, _, anchor = target.partition("#")
            path = (doc.parent / file).resolve() if file else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in slugs(path):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == [], "\n".join(broken)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "](reports/generated_grid.png)" in readme  # the picture of what comes out, committed
