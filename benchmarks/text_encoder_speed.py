"""Speed of the char-CNN-RNN text encoder on the CPU (not a test).

    python benchmarks/text_encoder_speed.py                 # 2,000 sentences, one thread
    python benchmarks/text_encoder_speed.py --n 5000 --threads 2

Encodes ``--n`` generated bird sentences (``gancls.text_encoder.encode``: eval mode, no gradients,
batches of ``--batch-size``) with randomly initialised encoders of the narrow sizes that
``fit_encoder`` uses by default and of Reed's sizes, after one warm-up batch each, and prints one JSON
line: narrow_sentences_per_s, reed_sentences_per_s, and the settings.  One thread by default: on two
busy shared cores, two threads measured 3.5 times slower (the GRU's small steps wait on each other).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gancls.text_encoder import NARROW_SIZES, REED_SIZES, CharCNNRNN, encode

COLOURS = ("red", "orange", "yellow", "green", "blue", "brown", "black", "white", "grey")
PARTS = ("belly", "wings", "head", "crown", "beak", "bill", "tail", "throat")


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        named = [f"a {rng.choice(COLOURS)} {rng.choice(PARTS)}" for _ in range(int(rng.integers(2, 6)))]
        out.append(f"this bird has {', '.join(named[:-1])} and {named[-1]}.")
    return out


def sentences_per_s(sizes: dict, texts: list[str], batch_size: int) -> float:
    model = CharCNNRNN(**sizes)
    encode(model, texts[:batch_size], batch_size)  # warm-up
    start = time.perf_counter()
    encode(model, texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences to encode")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts = sentences(args.n)
    narrow = {**REED_SIZES, **NARROW_SIZES}
    print(json.dumps({
        "narrow_sentences_per_s": round(sentences_per_s(narrow, texts, args.batch_size), 1),
        "reed_sentences_per_s": round(sentences_per_s(dict(REED_SIZES), texts, args.batch_size), 1),
        "sentences": args.n, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "narrow_sizes": narrow, "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
    }))


if __name__ == "__main__":
    main()
