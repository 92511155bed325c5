"""How well GAN-CLS learns under several settings, over seeds: a user of `gancls sweep` (docs/SWEEPS.md).

Runs the sweep file with `gancls sweep` (every (setting, seed) a DVC experiment on DVC's own queue, `jobs`
at once, in DVC's temporary copies; what is done with the same params is not run again), then writes one
JSON line per experiment of the sweep to ``reports/sweeps/<name>/results.jsonl`` -- its setting, seed,
overrides and every scalar metric (text match and its parts, FID and its floor, KID, diversity, training
seconds...) as `dvc exp show` reads them -- and prints the headline figures, one experiment a line. The
comparison over seeds (mean +- std, intervals against the baseline, the sheet) is `gancls sweep`'s, in
the same folder.

    .venv/bin/python benchmarks/learning_sweep.py configs/sweeps/recipe.yaml   # 3 settings x 3 seeds, about 1.5 h on 2 cores

On a GPU, set ``train.device`` and ``evaluate.device`` to cuda in params.yaml (they place a run; DVC
retrains nothing for them) and raise the sweep file's ``jobs``. The tables of docs/SCORES.md measured
before this script used DVC's queue were made by its earlier version (its own process pool over the JSON
configurations in benchmarks/*.json, results in benchmarks/*_results.jsonl; git history).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gancls  # noqa: F401  (first: telemetry off)
from gancls.runs.compare import HEADLINE, experiments
from gancls.runs.sweep import prepare_view, run_sweep


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep", type=Path, help="a sweep file (docs/SWEEPS.md), e.g. configs/sweeps/recipe.yaml")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = ap.parse_args()

    code = run_sweep(args.sweep, args.params)
    sweep = prepare_view(args.sweep, args.params)
    have = experiments(sweep.root)
    out = sweep.root / sweep.out / "results.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "name": p.name,
            "setting": p.setting,
            "seed": p.seed,
            "overrides": list(p.overrides),
            "metrics": have[p.name].metrics,
        }
        for p in sweep.planned
        if p.name in have
    ]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    shown = [(key, what) for key, what in HEADLINE if any(key in r["metrics"] for r in rows)]
    print("\t".join(["experiment", *(what for _, what in shown)]))
    for r in rows:
        cells = [r["metrics"].get(key) for key, _ in shown]
        print("\t".join([r["name"], *("-" if v is None else f"{v:.4g}" for v in cells)]))
    print(f"{len(rows)} experiments: {out}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
