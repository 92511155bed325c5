"""What the scheduled Prefect run needs besides orchestration: DVC's status and metrics diff read into
plain data, the regression check, the run's markdown summary, the run lock, the last accepted run and
the training epoch DVCLive last wrote.

Nothing here runs DVC or Prefect; ``flows/scheduled.py`` calls DVC (``gancls.runs.process``,
``gancls.runs.worktree``) and passes its JSON in.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import time
from pathlib import Path

from gancls.config import RegressionRule

LOCK = ".dvc/tmp/gancls-flow.lock"  # one scheduled run at a time per repository
STATE = ".dvc/tmp/gancls-flow/last.json"  # the last run (commit, experiment) and the last accepted one
RUNS_DIR = ".dvc/tmp/gancls-flow/runs"  # temporary git worktrees, one per run, removed after it


class RunRefused(RuntimeError):
    """Another scheduled run holds the repository's run lock."""


class Regression(RuntimeError):
    """A metric worsened past its ``flow.regression`` limit."""


def stale_stages(status: dict) -> dict[str, list[str]]:
    """``dvc status --json`` as {stage or .dvc file: what changed}, e.g. {"train": ["params.yaml", ...]}."""
    out = {}
    for name, entries in status.items():
        what = []
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict):
                for kind, paths in entry.items():
                    if isinstance(paths, dict):
                        what += [f"{path} ({state})" for path, state in paths.items()]
                    else:
                        what.append(str(kind))
            else:
                what.append(str(entry))  # "always changed", "changed checksum"
        out[name.rsplit(":", 1)[-1]] = what
    return out


def tracked_data(root: str | Path) -> dict[str, dict]:
    """Each ``*.dvc`` file at ``root`` (``data.dvc``): ``missing``, those of its outputs that are not
    there, and ``hashed``, whether every output has a hash (``dvc checkout`` can bring it from a cache).

    ``data/`` is absent until ``gancls fetch`` runs (or ``dvc checkout`` finds it in the cache); the
    embedded sample does not read it, and DVC can neither check out nor record it then.
    """
    import yaml

    out = {}
    for path in sorted(p for p in Path(root).glob("*.dvc") if p.is_file()):  # not the .dvc/ folder
        outs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("outs") or []
        out[path.name] = {
            "missing": [o["path"] for o in outs if not (Path(root) / o["path"]).exists()],
            "hashed": all(o.get("md5") or o.get("etag") for o in outs),
        }
    return out


def live_epoch(summary: str | Path, since: float) -> int | None:
    """The epoch DVCLive last wrote to its summary (``<train.live_dir>/metrics.json``), if it was written at
    or after ``since`` (a ``time.time()``); None before that, or while the file is being replaced.

    ``gancls train`` sets DVCLive's step to the 1-based epoch before ``next_step()`` writes the summary,
    so the summary's ``step`` is the epoch just completed (60 after the last of 60 epochs).
    """
    try:
        if Path(summary).stat().st_mtime < since:
            return None
        return int(json.loads(Path(summary).read_text(encoding="utf-8")).get("step", 0))
    except (OSError, ValueError):
        return None


def steps_to_run(stale: dict[str, list[str]], steps: dict[str, list[str]]) -> list[str]:
    """The steps from the first one holding a stale stage on (``dvc repro`` skips what is up to date).

    A stale stage makes only stages downstream of it stale, so earlier steps need not run; a stale
    entry that is no step's stage (``data.dvc``) reruns every step.
    """
    if not stale:
        return []
    order = list(steps)
    firsts = [i for i, step in enumerate(order) if set(steps[step]) & set(stale)]
    if len(firsts) == 0 or set(stale) - {s for stages in steps.values() for s in stages}:
        return order
    return order[min(firsts) :]


def diff_rows(diff: dict) -> list[dict]:
    """``dvc metrics diff --json --all`` as rows: file, metric, old, new, change (numbers only)."""
    rows = []
    for file, metrics in sorted(diff.items()):
        for metric, values in sorted(metrics.items()):
            old, new = values.get("old"), values.get("new")
            if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new)):
                continue
            rows.append({"file": file, "metric": metric, "old": old, "new": new, "change": values.get("diff")})
    return rows


def regressions(rows: list[dict], rules: dict[str, RegressionRule]) -> list[str]:
    """One line per metric that worsened past its rule; metrics without a baseline value are not judged."""
    found = []
    for row in rows:
        rule = rules.get(row["metric"]) or rules.get(f"{row['file']}:{row['metric']}")
        old, new = row["old"], row["new"]
        if rule is None or not isinstance(old, (int, float)) or not isinstance(new, (int, float)):
            continue
        if math.isnan(new) and not math.isnan(old):
            found.append(f"{row['metric']}: {old} -> nan")
        elif rule.max_drop is not None and old - new > rule.max_drop:
            found.append(
                f"{row['metric']}: {old:.4g} -> {new:.4g}, dropped by {old - new:.4g} "
                f"(flow.regression allows {rule.max_drop:g})"
            )
        elif rule.max_rise is not None and new - old > rule.max_rise:
            found.append(
                f"{row['metric']}: {old:.4g} -> {new:.4g}, rose by {new - old:.4g} "
                f"(flow.regression allows {rule.max_rise:g})"
            )
    return found


def validation_summary(result: dict) -> str:
    """One line from reports/validation/result.json: pass or fail, counts, failed checks."""
    counts = ", ".join(
        f"{k[2:] if k.startswith('n_') else k} {result[k]}"
        for k in ("n_images", "n_train", "n_test", "n_classes")
        if k in result
    )
    head = "passed" if result.get("success") else "FAILED"
    failures = result.get("failures") or []
    tail = "; failed: " + "; ".join(str(f) for f in failures[:10]) if failures else ""
    return f"validation {head} ({result.get('source', '?')}, {counts}){tail}"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "—" if value is None else str(value)


def summary_markdown(
    *,
    experiment: str | None,
    baseline: str,
    rows: list[dict],
    failed: list[str],
    ran: list[str],
    changes: dict[str, list[str]],
    validation: str | None,
    grids: dict[str, str],
    note: str = "",
) -> str:
    """The run's markdown artifact: verdict, what changed, the metrics diff, validation, grids."""
    verdict = (
        f"**REGRESSION** against `{baseline}`:\n\n" + "\n".join(f"- {f}" for f in failed)
        if failed
        else f"No regression against `{baseline}`."
    )
    title = f"experiment `{experiment}`" if experiment else "no experiment"
    lines = (
        [f"# gancls scheduled run: {title}", ""] + ([note, ""] if note else []) + [verdict, "", "## What changed", ""]
    )
    lines += [f"- `{name}`: {', '.join(what[:8])}" for name, what in changes.items()] or ["- nothing"]
    lines += [
        "",
        f"Steps run: {', '.join(ran) or 'none'}.",
        "",
        f"## Metrics (`dvc metrics diff {baseline}`)",
        "",
        "| file | metric | baseline | this run | change |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['file']} | {r['metric']} | {_fmt(r['old'])} | {_fmt(r['new'])} | {_fmt(r['change'])} |" for r in rows
    ]
    lines += ["", "## Validation", "", validation or "no validation result", "", "## Grids", ""]
    lines += [f"- {what}: `{path}`" for what, path in grids.items()]
    if experiment:
        lines += [
            "",
            f"They are in experiment `{experiment}`: `dvc exp apply {experiment}` brings them into "
            "the workspace, `dvc exp show` lists it.",
        ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_lock(root: str | Path, wait: float = 0.0, owner: str = ""):
    """Hold ``<root>/.dvc/tmp/gancls-flow.lock`` (flock: released when the process dies).

    Waits up to ``wait`` seconds for another holder, then raises RunRefused naming it.
    """
    path = Path(root) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = Path(path).read_text(encoding="utf-8").strip() or "unknown"
                    raise RunRefused(
                        f"another gancls scheduled run ({holder}) holds {path}; "
                        "this run was refused and changed nothing"
                    ) from None
                time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}{', ' + owner if owner else ''}".encode())
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def last_run(root: str | Path) -> dict | None:
    """The last recorded run: {head, experiment, rev, accepted: {experiment, rev} of the last without regression}."""
    path = Path(root) / STATE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def save_run(root: str | Path, head: str, experiment: str, rev: str, accepted: bool) -> None:
    from gancls.files import write_json

    previous = (last_run(root) or {}).get("accepted")
    write_json(
        Path(root) / STATE,
        {
            "head": head,
            "experiment": experiment,
            "rev": rev,
            "accepted": {"experiment": experiment, "rev": rev} if accepted else previous,
        },
    )
