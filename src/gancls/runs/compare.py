"""``gancls compare EXP...`` (and the end of ``gancls sweep``): experiments side by side, over seeds.

The experiments' params and metrics come from ``dvc exp show --json`` (the experiments of HEAD).  Runs
whose params differ only in ``seed`` are one *setting*; per setting, every scalar metric gets n, mean and
standard deviation over its seeds, and each setting's difference from the baseline gets a 95% interval
(Welch's t over the seeds): a difference whose interval holds 0 is within seed noise.  Written to
``reports/sweeps/<name>/``:

* ``comparison.csv`` (every scalar metric: one row per setting and metric) and ``comparison.md`` (the
  headline metrics, with each metric's reference: chance and the real ceiling of text match, the FID floor);
* ``tradeoff.png``: text match against FID, and diversity, mean and standard deviation per setting;
* ``sheet.png``: the same test captions and noise vectors drawn by each setting's first seed.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ConfigError
from ..files import atomic_path
from .process import dvc

# The metrics files, by the short name their keys get in the comparison (``scores.json`` has none).
PREFIX = {"metrics/scores.json": "", "dvclive/metrics.json": "train.", "metrics/text_encoder.json": "text_encoder."}
HEADLINE = [
    ("text_match.accuracy", "text match"),
    ("text_match.of_ceiling", "text match / real ceiling"),
    ("text_match.per_kind.body", "body"),
    ("text_match.per_kind.head", "head"),
    ("text_match.per_kind.wing", "wing"),
    ("text_match.per_kind.beak", "beak"),
    ("fid", "FID"),
    ("fid_of_floor", "FID / floor"),
    ("kid_mean", "KID"),
    ("diversity.unnamed_distinct.of_real", "diversity (of real)"),
    ("text_match.encoded_of_stored", "encoded / stored text"),
    ("seconds.train", "train seconds"),
]


@dataclass
class Experiment:
    name: str
    params: dict
    metrics: dict[str, float] = field(default_factory=dict)


def flat(data, prefix: str = "") -> dict:
    out = {}
    for key, value in (data or {}).items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _metrics(files: dict) -> dict[str, float]:
    out = {}
    for file, body in (files or {}).items():
        data = flat((body or {}).get("data"))
        if file.startswith("metrics/stages/"):
            prefix = {"seconds": f"seconds.{Path(file).stem}"}
            out.update({prefix[k]: v for k, v in data.items() if k in prefix})
            continue
        pre = PREFIX.get(file, f"{Path(file).stem}.")
        out.update({pre + k: v for k, v in data.items()})
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def experiments(root: str | Path) -> dict[str, Experiment]:
    """The finished experiments of HEAD, by name: params.yaml (nested) and scalar metrics (flat keys).

    Queued, running and failed ones are left out: `dvc exp show` lists them with their baseline's
    params and metrics, which are not theirs."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=root).stdout or "[]")
    out = {}
    for base in shown:
        for exp in base.get("experiments") or []:
            if (exp.get("executor") or {}).get("state") not in (None, "success"):
                continue
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if rev.get("name") and not rev.get("error") and data.get("metrics"):
                    params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
                    out[rev["name"]] = Experiment(rev["name"], params, _metrics(data["metrics"]))
    return out


def group_by_setting(exps: list[Experiment], labels: dict[str, str] | None = None) -> dict[str, list[Experiment]]:
    """Settings in the order first seen: ``labels`` (experiment name -> setting), or else the params
    without ``seed`` (named by their first experiment)."""
    groups: dict[str, list[Experiment]] = {}
    keys: dict[str, str] = {}
    for exp in exps:
        if labels:
            label = labels[exp.name]
        else:
            key = json.dumps({k: v for k, v in exp.params.items() if k != "seed"}, sort_keys=True)
            label = keys.setdefault(key, exp.name)
        groups.setdefault(label, []).append(exp)
    return groups


def summary(values: list[float]) -> tuple[int, float, float]:
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    return n, mean, std


def difference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) and its 95% interval (Welch's t); the interval is NaN under 2 seeds a side."""
    from scipy import stats

    na, ma, sa = summary(a)
    nb, mb, sb = summary(b)
    diff = ma - mb
    if na < 2 or nb < 2:
        return diff, math.nan, math.nan
    va, vb = sa**2 / na, sb**2 / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    half = float(stats.t.ppf(0.975, dof)) * se
    return diff, diff - half, diff + half


def table(groups: dict[str, list[Experiment]], baseline: str) -> list[dict]:
    """One row per (setting, metric): n, mean, std, the difference from the baseline and its interval."""
    metrics = sorted({k for exps in groups.values() for e in exps for k in e.metrics})
    base = groups[baseline]
    rows = []
    for label, exps in groups.items():
        for metric in metrics:
            values = [e.metrics[metric] for e in exps if metric in e.metrics]
            if not values:
                continue
            n, mean, std = summary(values)
            row = {"setting": label, "metric": metric, "n": n, "mean": mean, "std": std}
            ref = [e.metrics[metric] for e in base if metric in e.metrics]
            if label != baseline and ref:
                diff, lo, hi = difference(values, ref)
                beyond = "n/a (under 2 seeds)" if math.isnan(lo) else ("yes" if lo > 0 or hi < 0 else "no")
                row.update(diff=diff, ci_low=lo, ci_high=hi, beyond_seed_noise=beyond)
            rows.append(row)
    return rows


def _fmt(x) -> str:
    if isinstance(x, str):
        return x
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}"


def markdown(groups: dict[str, list[Experiment]], baseline: str, rows: list[dict], title: str) -> str:
    by = {(r["setting"], r["metric"]): r for r in rows}
    lines = [f"# {title}", ""]
    lines += [f"- **{label}**: {', '.join(e.name for e in exps)}" for label, exps in groups.items()]
    ref = [e for e in groups[baseline]]
    refs = []
    for key, what in (
        ("text_match.chance", "chance"),
        ("text_match.real_ceiling", "real ceiling"),
        ("fid_floor", "FID floor"),
    ):
        _, mean, _ = summary([e.metrics[key] for e in ref if key in e.metrics])
        if not math.isnan(mean):
            refs.append(f"{what} {mean:.4g}")
    lines += ["", f"References (the baseline's runs): {', '.join(refs) or 'none found'}.", ""]
    lines += [
        f"Mean ± standard deviation over seeds (n); each other setting's difference from **{baseline}** with its "
        "95% interval (Welch's t over the seeds). A difference whose interval holds 0 is within seed noise.",
        "",
        "| metric | " + " | ".join(groups) + " |",
        "|---|" + "---|" * len(groups),
    ]
    for metric, what in HEADLINE:
        cells = []
        for label in groups:
            r = by.get((label, metric))
            if r is None:
                cells.append("–")
                continue
            cell = f"{_fmt(r['mean'])} ± {_fmt(r['std'])} ({r['n']})"
            if "diff" in r:
                mark = " **beyond noise**" if r["beyond_seed_noise"] == "yes" else ""
                cell += f"<br>Δ {r['diff']:+.3g} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]{mark}"
            cells.append(cell)
        if any(c != "–" for c in cells):
            lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines += ["", "Every scalar metric: `comparison.csv`. Pictures: `tradeoff.png`, `sheet.png`.", ""]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    cols = ["setting", "metric", "n", "mean", "std", "diff", "ci_low", "ci_high", "beyond_seed_noise"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, cols, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")


def tradeoff_plot(groups: dict[str, list[Experiment]], path: Path) -> None:
    """Text match against FID, and diversity against FID: mean ± std per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, (key, what) in zip(axes, HEADLINE[:1] + HEADLINE[9:10]):
        for label, exps in groups.items():
            xs = [e.metrics.get("fid", math.nan) for e in exps]
            ys = [e.metrics.get(key, math.nan) for e in exps]
            _, mx, sx = summary(xs)
            _, my, sy = summary(ys)
            if math.isnan(my):
                continue
            bar = ax.errorbar(
                mx, my, xerr=0 if math.isnan(sx) else sx, yerr=0 if math.isnan(sy) else sy, fmt="o", capsize=3
            )
            ax.scatter(xs, ys, s=10, alpha=0.4, color=bar[0].get_color())
            ax.annotate(f"{label} (n={len(exps)})", (mx, my), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if not ax.has_data():
            ax.text(0.5, 0.5, f"{what}: not measured in these runs", ha="center", transform=ax.transAxes)
        ax.set_xlabel("FID (lower is better)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    fig.suptitle("mean ± std over seeds per setting (dots: the seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def compare(
    names: list[str],
    out_dir: str | Path,
    root: str | Path = ".",
    baseline: str | None = None,
    labels: dict[str, str] | None = None,
    title: str | None = None,
    sheet: bool = True,
) -> dict[str, Path]:
    """The comparison of experiments ``names`` (of HEAD) into ``out_dir``; the paths written."""
    found = experiments(root)
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(f"no finished experiment named {', '.join(missing)} on HEAD (`dvc exp list` lists them)")
    groups = group_by_setting([found[n] for n in names], labels)
    if baseline and baseline not in groups:  # an experiment's name: its setting
        baseline = next((label for label, exps in groups.items() if baseline in {e.name for e in exps}), baseline)
    baseline = baseline or next(iter(groups))
    if baseline not in groups:
        raise ConfigError(f"baseline {baseline!r} is not one of the settings ({', '.join(groups)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = table(groups, baseline)
    paths = {"csv": out / "comparison.csv", "md": out / "comparison.md", "tradeoff": out / "tradeoff.png"}
    write_csv(rows, paths["csv"])
    md = markdown(groups, baseline, rows, title or f"Comparison of {len(names)} experiments")
    with atomic_path(paths["md"]) as tmp:
        Path(tmp).write_text(md, encoding="utf-8")
    tradeoff_plot(groups, paths["tradeoff"])
    if sheet:
        from ..drawing.sheet import settings_sheet

        firsts = {label: exps[0].name for label, exps in groups.items()}
        paths["sheet"] = settings_sheet(firsts, out / "sheet.png", root)
    return paths
