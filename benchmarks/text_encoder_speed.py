"""Speed of the char-CNN-RNN text encoder on the CPU (not a test).

    python benchmarks/text_encoder_speed.py                 # 2,000 sentences, one thread
    python benchmarks/text_encoder_speed.py --n 5000 --threads 2

Encodes ``--n`` generated bird sentences (``gancls.models.text_encoder.encode``: eval mode, no gradients,
batches of ``--batch-size``) with randomly initialised encoders of the narrow sizes that
``fit_encoder`` uses by default and of Reed's sizes, after one warm-up batch each, and prints one JSON
line: narrow_sentences_per_s, reed_sentences_per_s, and the settings.  It also times training steps
of the narrow encoder (forward, loss, backward, Adam) as fitted by ``gancls train-text-encoder``, with
Reed's FixedGRU and with ``torch.nn.GRU`` in its place: what his GRU costs.  One thread by default: on two
busy shared cores, two threads measured 3.5 times slower (the GRU's small steps wait on each other).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from gancls.models.text_encoder import NARROW_SIZES, REED_SIZES, CharCNNRNN, encode, encode_text

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


class TorchGRU(torch.nn.Module):
    """What Reed's FixedGRU costs: ``torch.nn.GRU`` (fused gates, no ungated first step) in its place,
    with the same mean of the hidden states.  For timing only."""

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.gru = torch.nn.GRU(input_size, hidden, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0].mean(dim=1)


def training_steps_per_s(sizes: dict, texts: list[str], batch_size: int, steps: int, gru=None) -> float:
    """Adam steps (forward, 1 - cosine, backward) per second on batches of ``texts``."""
    model = CharCNNRNN(**sizes)
    if gru is not None:
        model.gru = gru(sizes["c3"], sizes["hidden"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    onehot = encode_text(texts[:batch_size])
    target = torch.randn(len(onehot), sizes["out"])

    def step():
        loss = 1 - torch.nn.functional.cosine_similarity(model(onehot), target).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="sentences to encode")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    ap.add_argument("--train-steps", type=int, default=30, help="training steps timed per variant")
    ap.add_argument("--train-batch", type=int, default=64, help="batch of the training steps (text_encoder.batch_size)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    texts = sentences(args.n)
    narrow = {**REED_SIZES, **NARROW_SIZES}
    print(
        json.dumps(
            {
                "narrow_sentences_per_s": round(sentences_per_s(narrow, texts, args.batch_size), 1),
                "reed_sentences_per_s": round(sentences_per_s(dict(REED_SIZES), texts, args.batch_size), 1),
                "narrow_train_steps_per_s": round(
                    training_steps_per_s(narrow, texts, args.train_batch, args.train_steps), 2
                ),
                "narrow_train_steps_per_s_torch_gru": round(
                    training_steps_per_s(narrow, texts, args.train_batch, args.train_steps, TorchGRU), 2
                ),
                "sentences": args.n,
                "batch_size": args.batch_size,
                "threads": torch.get_num_threads(),
                "narrow_sizes": narrow,
                "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
