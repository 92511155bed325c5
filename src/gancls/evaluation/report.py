"""A short markdown report of one run: the text-conditioning score with its references, the image
scores with their sample counts, the training summary and links to the pictures.

Written by ``evaluate`` next to the grids (``evaluate.report``); the Prefect flow can publish it
as a markdown artifact.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..files import atomic_path


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "missing"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _link(path: str | Path, report: Path) -> str:
    return os.path.relpath(Path(path), report.parent).replace(os.sep, "/")


def _sentences(encoder: dict | None, sentences: list[str]) -> list[str]:
    """How a typed sentence becomes a picture: the text encoder's scores and the command."""
    lines = ["## Sentences of your own", ""]
    if encoder:
        how = (
            "Reed's pretrained CUB encoder"
            if encoder.get("source") == "reed"
            else "fitted to the training split's (caption, stored embedding) pairs"
        )
        lines += [
            f"Text encoder: char-CNN-RNN, {how} ({encoder.get('parameters')} parameters). On the "
            f"{encoder.get('test_captions')} test captions (classes it never saw): cosine to the stored "
            f"embedding {_fmt(encoder.get('test_cosine'))}, retrieval top-1 {_fmt(encoder.get('test_top1'))}.",
            "",
        ]
    example = " ".join(f'--text "{t}"' for t in sentences[:2])
    lines += [
        "Draw any sentence with the trained generator:",
        "",
        "```",
        f".venv/bin/gancls sample {example} --n 8",
        "```",
        "",
    ]
    return lines


def _diversity(div: dict | None) -> list[str]:
    """One caption, several noise vectors: how much the pictures vary, next to real images."""
    if not div:
        return []
    lines = [
        "## Does the noise matter?",
        "",
        f"{div['captions_drawn']} test captions, {div['noise_vectors']} noise vectors each "
        "(`build/generated/noise_sets.h5`), next to as many real images that agree with the caption.",
        "",
        "| | generated | real | generated / real |",
        "|---|---|---|---|",
    ]
    rows = [("distinct values of what the caption leaves free (1 = z ignored)", div.get("unnamed_distinct"))]
    rows += [(f"… {kind}", v) for kind, v in (div.get("per_kind") or {}).items()]
    rows += [("pixel standard deviation across the images (0-255)", div.get("pixel_std"))]
    rows += [("mean Inception distance between the images (real: one class)", div.get("feature_spread"))]
    for label, v in rows:
        if v:
            lines.append(f"| {label} | {_fmt(v['generated'], 2)} | {_fmt(v['real'], 2)} | {_fmt(v['of_real'], 2)} |")
    lines.append("")
    for key in ("unnamed_missing_reason", "feature_missing_reason"):
        if div.get(key):
            lines += [f"Missing: {div[key]}.", ""]
    return lines


def _floor(scores: dict) -> list[str]:
    """FID and KID as multiples of the real-against-real floor (what a perfect generator scores)."""
    if scores.get("fid_floor") is None:
        reason = scores.get("floor_missing_reason")
        return [f"Floor missing: {reason}.", ""] if reason else []
    kid = scores.get("kid_of_floor")
    kid_text = f"KID {kid:.0f}x its floor of" if kid is not None else "KID against a floor of"
    lines = [
        f"FID is **{scores['fid_of_floor']:.1f}x the floor** of {scores['fid_floor']:.1f}; {kid_text} "
        f"{scores['kid_floor'] * 1000:.2f} (x1000). The floor is {scores['floor']['how']}.",
        "",
    ]
    if scores.get("kid_of_floor_missing_reason"):
        lines += [f"KID as a multiple of its floor: missing ({scores['kid_of_floor_missing_reason']}).", ""]
    return lines


def render(
    scores: dict,
    train: dict | None,
    pictures: dict[str, str],
    report: Path,
    encoder: dict | None = None,
    sentences: list[str] = (),
    stages: dict[str, dict] | None = None,
) -> str:
    tm = scores["text_match"]
    lines = ["# gancls run report", ""]
    lines += [
        f"Data: `{scores['source']}`. Scores of images generated from test captions (classes never seen in training).",
        "",
    ]
    lines += [
        "## Does the picture show what the caption says?",
        "",
        f"Labels checked: {', '.join(tm['labels'])} ({tm['n_statements']} statements in {tm['n_pairs']} captions).",
        "",
        "| | fraction of stated labels shown |",
        "|---|---|",
        f"| **generated images** | **{_fmt(tm['accuracy'])}** |",
        f"| generated from the same captions' text, encoded by the text encoder | {_fmt(tm.get('encoded_accuracy'))} |",
        f"| real held-out images (ceiling) | {_fmt(tm['real_ceiling'])} |",
        f"| generated images vs a caption of another class (mismatched control) | {_fmt(tm['mismatched_accuracy'])} |",
        f"| chance (labels drawn with the captions' own frequencies) | {_fmt(tm['chance'])} |",
        "",
    ]
    if tm.get("of_ceiling") is not None:
        lines += [
            f"Generated images reach {tm['of_ceiling']:.0%} of the real ceiling and "
            f"{_fmt(tm.get('over_mismatched'), 2)}x the mismatched control.",
            "",
        ]
    if len(tm.get("per_kind", {})) > 1:
        lines += ["| label | accuracy |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in tm["per_kind"].items()]
        lines += [""]
    lines += _diversity(scores.get("diversity"))
    lines += _sentences(encoder, sentences)
    lines += [
        "## Image statistics",
        "",
        "| FID | KID (x1000) | IS | real / generated images |",
        "|---|---|---|---|",
        f"| {_fmt(scores['fid'], 2)} | {scores['kid_mean'] * 1000:.2f} ± {scores['kid_std'] * 1000:.2f} "
        f"| {_fmt(scores.get('is'), 2)} | {scores['n_real']} / {scores['n_fake']} |",
        "",
    ]
    lines += _floor(scores)
    if scores.get("is") is None and scores.get("is_missing_reason"):
        lines += [f"IS missing: {scores['is_missing_reason']}.", ""]
    lines += [
        f"Feature extractor: `{scores['feature_extractor']['name']}` "
        f"(SHA-1 `{scores['feature_extractor']['sha1'][:12]}…`). Compare FIDs only at equal counts.",
        "",
    ]
    if train:
        lines += [
            "## Training",
            "",
            f"{train.get('epochs')} epochs, {train.get('steps', '?')} steps on {train.get('device')}, "
            f"{train.get('seconds')} s ({train.get('images_per_s')} images/s); shipped: "
            f"{train.get('shipped', 'last epoch')}. Final d_loss {train.get('d_loss')}, "
            f"g_loss {train.get('g_loss')}, D(real) {train.get('d_real')}, D(wrong) {train.get('d_wrong')}, "
            f"D(fake) {train.get('d_fake')}.",
            "",
        ]
    lines += _stages(stages or {})
    lines += ["## Pictures", ""]
    for title, path in pictures.items():
        if Path(path).exists():
            lines += [f"**{title}** (`{path}`)", "", f"![{title}]({_link(path, report)})", ""]
    return "\n".join(lines)


def _stages(stages: dict[str, dict]) -> list[str]:
    """Where the run's minutes went: each stage's seconds when it last ran (``gancls <stage>``)."""
    if not stages:
        return []
    total = sum(r["seconds"] for r in stages.values())
    lines = [
        "## Where the minutes went",
        "",
        "Each stage's wall-clock seconds when it last ran (`metrics/stages/`): a stage that DVC found up to date, "
        "or restored from its cache, keeps the time of its last run (see when it finished).",
        "",
        "| stage | seconds | share | finished (UTC) |",
        "|---|---|---|---|",
    ]
    for name, r in stages.items():
        when = "running (until this report)" if r.get("running") else r.get("finished", "?")
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['seconds'] / total:.0%} | {when} |")
    lines += [f"| all | {total:.1f} | 100% | |", ""]
    return lines


def _json(path: str | Path | None) -> dict | None:
    if path and Path(path).is_file():
        return json.loads(Path(path).read_text(encoding="utf-8"))
    return None


def write_report(
    scores: dict,
    train_metrics: str | Path | None,
    pictures: dict[str, str],
    out: str | Path,
    encoder_metrics: str | Path | None = None,
    sentences: list[str] = (),
    stages: dict[str, dict] | None = None,
) -> Path:
    out = Path(out)
    text = render(scores, _json(train_metrics), pictures, out, _json(encoder_metrics), list(sentences), stages)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
