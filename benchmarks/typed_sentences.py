"""Sentences of one's own through the trained run: do the pictures show what the sentences state? (not a test)

    python benchmarks/typed_sentences.py                       # after `make run`, on the sample
    python benchmarks/typed_sentences.py --sentences my.tsv --n 16 --out reports/typed_benchmark.png

Reads ``--sentences`` (a TSV: the sentence, a tab, what it states as ``kind=value`` pairs of the
scorer's kinds, e.g. ``body=red wing=blue``; ``#`` lines are comments), draws ``--n`` images per
sentence with ``gancls sample --text`` (``gancls.drawing.draw.draw_sentences``: the text encoder and
generator of params.yaml), writes the grid, and applies the run's text-conditioning classifier
(``scorer.out``) to every image.  Prints one JSON line:

* ``accuracy``: the share of stated (image, kind) labels the classifier sees in the images;
* ``mismatched_accuracy``: the same images judged against the statements of the next sentence in
  the file (the control: a generator that ignored the text would score the same on both);
* ``per_sentence``: each sentence's accuracy, and the settings.

The sentences' statements are written by hand in the TSV, so the score does not depend on parsing
them; only the sample's scorer (colours of body, wing, head, beak) can score them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from gancls.config import load_params
from gancls.drawing.draw import draw_sentences
from gancls.evaluation.scorer import _hits, load_scorer


def read_sentences(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    texts, stated = [], []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        text, _, labels = line.partition("\t")
        pairs = [p.split("=", 1) for p in labels.split()]
        if not labels.strip() or any(len(p) != 2 for p in pairs):
            sys.exit(f"{path}:{n}: expected 'sentence<TAB>kind=value ...'")
        texts.append(text.strip())
        stated.append(dict(pairs))
    return texts, stated


def check_labels(stated: list[dict[str, str]], vocab: dict[str, list[str]]) -> None:
    for labels in stated:
        for kind, value in labels.items():
            if kind not in vocab or value not in vocab[kind]:
                sys.exit(f"'{kind}={value}' is not a label of the scorer ({', '.join(vocab)})")


def hit_rate(pred: np.ndarray, stated: dict[str, str], vocab: dict[str, list[str]]) -> tuple[int, int]:
    """(hits, statements) of the images ``pred`` (N, kinds) against one sentence's statements (scorer._hits)."""
    hits = _hits(pred, [stated] * len(pred), vocab)
    return int((hits == 1).sum()), int((hits >= 0).sum())


def main() -> None:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--sentences", type=Path, default=here / "typed_sentences.tsv")
    ap.add_argument("--n", type=int, default=16, help="images per sentence")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="reports/typed_benchmark.png")
    args = ap.parse_args()
    params = load_params(args.params)
    texts, stated = read_sentences(args.sentences)
    h5 = Path(args.out).with_suffix(".h5")
    draw_sentences(
        Path(params.train.out_dir) / "generator.pt",
        params.text_encoder.weights,
        texts,
        args.out,
        per_sentence=args.n,
        seed=args.seed,
        device=params.train.device,
        h5=h5,
    )
    with h5py.File(h5) as f:
        images = f["images"][()]
    scorer, state = load_scorer(params.scorer.out)
    vocab = state["vocab"]
    check_labels(stated, vocab)
    preds = [scorer.predict(images[i]) for i in range(len(texts))]
    own = [hit_rate(p, s, vocab) for p, s in zip(preds, stated)]
    other = [hit_rate(p, stated[(i + 1) % len(stated)], vocab) for i, p in enumerate(preds)]
    rate = lambda rows: sum(h for h, _ in rows) / sum(t for _, t in rows)
    print(
        json.dumps(
            {
                "accuracy": round(rate(own), 4),
                "mismatched_accuracy": round(rate(other), 4),
                "per_sentence": {t: round(h / n, 3) for t, (h, n) in zip(texts, own)},
                "sentences": len(texts),
                "images_per_sentence": args.n,
                "grid": args.out,
                "h5": str(h5),
                "encoder": params.text_encoder.weights,
                "scorer": params.scorer.out,
            }
        )
    )


if __name__ == "__main__":
    main()
