"""A copy of this project to run things in: a ``git clone`` of a repository with its uncommitted edits
laid on top and a params.yaml overlay committed.  The end-to-end tests (``tests/conftest.py``) and the
benchmarks run the pipeline, the flows and the served deployment in such a clone, never in the
repository itself.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import yaml

from .process import git


def merge(base: dict, over: dict) -> dict:
    """``base`` with ``over`` laid on top, nested dicts merged key by key (a copy; neither is changed)."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def outputs_under(raw: dict, folder: str | Path) -> dict:
    """``raw`` (params.yaml's dict, changed in place and returned) with everything train, generate and
    evaluate write moved under ``folder``: ``model/``, ``checkpoints/``, ``live/``, ``generated/``,
    ``scores.json`` and ``reports/`` (the grids, the progress GIF, the run report).  For runs made outside
    the pipeline -- benchmarks and tests -- that must not touch the project's own outputs.
    """
    f = Path(folder)
    reports = f / "reports"
    raw["train"].update(
        out_dir=str(f / "model"),
        live_dir=str(f / "live"),
        checkpoint_dir=str(f / "checkpoints"),
        grid=str(reports / "train.png"),
        progress_gif=str(reports / "train.gif"),
    )
    raw["generate"].update(
        out_dir=str(f / "generated"),
        grid=str(reports / "generated.png"),
        interp_grid=str(reports / "interp_text.png"),
        noise_grid=str(reports / "interp_noise.png"),
        sentences_grid=str(reports / "typed_sentences.png"),
        side_by_side=str(reports / "real_vs_generated.png"),
    )
    raw["evaluate"].update(out=str(f / "scores.json"), report=str(reports / "report.md"), floor=str(f / "floor.json"))
    return raw


def clone_project(source: str | Path, repo: str | Path, overlay: dict | None = None) -> Path:
    """``repo``: a git clone of ``source`` as committed — every tracked file, ``data.dvc``, ``dvc.lock`` and
    ``.gitignore`` included — with ``overlay`` laid on its params.yaml and committed.

    Uncommitted edits of ``source``'s working tree (changed, staged, new and deleted files, not ignored
    ones) are laid on top before that commit, so a change is tried before it is committed; a clean
    checkout has none.
    """
    source, repo = Path(source).resolve(), Path(repo)
    git("clone", "-q", str(source), str(repo), cwd=source.parent)

    def listed(*cmd: str) -> list[str]:
        return [name for name in git(*cmd, "-z", cwd=source).split("\0") if name]

    deleted = set(listed("diff", "HEAD", "--name-only", "--no-renames", "--diff-filter=D"))
    for name in listed("diff", "HEAD", "--name-only", "--no-renames") + listed(
        "ls-files", "--others", "--exclude-standard"
    ):
        if name not in deleted:
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            (repo / name).unlink(missing_ok=True)
            shutil.copy2(source / name, repo / name, follow_symlinks=False)
    for name in deleted:
        (repo / name).unlink(missing_ok=True)
    params = merge(yaml.safe_load((source / "params.yaml").read_text(encoding="utf-8")), overlay or {})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    for cmd in (
        ("config", "user.email", "test@example.com"),
        ("config", "user.name", "test"),
        ("add", "-A"),
        ("commit", "-qm", "params overlay"),
    ):
        git(*cmd, cwd=repo)
    return repo
