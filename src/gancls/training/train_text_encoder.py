"""train-text-encoder stage: the encoder that turns a typed sentence into the embedding G reads.

* ``text_encoder.source: fit`` (the default; the only choice without Reed's file): a ``CharCNNRNN`` of
  ``text_encoder.sizes`` fitted to the **training split's** (caption, stored embedding) pairs, so that
  a new sentence lands in the embedding space the GAN was trained on.  Loss: ``1 - cosine`` to the
  caption's own embedding plus ``contrastive_weight`` x an in-batch InfoNCE against the other
  images' embeddings (in the spirit of Reed's DS-SJE ranking loss; a pure cosine loss reaches a
  similar cosine but a lower retrieval top-1 on the sample).
* ``text_encoder.source: reed``: Reed's pretrained CUB encoder, read from
  ``<data.raw_dir>/<text_encoder.reed_t7>`` (``gancls fetch`` puts it there) by ``gancls.models.reed_t7``.

Either way it is scored on the **test split's** captions (classes it never saw): ``test_cosine``, the
mean cosine of an encoded caption to its stored embedding, and ``test_top1``, the share of captions
whose nearest stored embedding among all test captions' is one of its own image's.  The weights go
to ``text_encoder.weights``, the scores to ``text_encoder.metrics``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ConfigError, Params, resolve_device
from ..data.prepared import read_prepared
from ..files import file_digest, write_json
from ..models.text_encoder import NARROW_SIZES, CharCNNRNN, char_codes, encode, one_hot, save_encoder


def caption_pairs(split: dict[str, np.ndarray]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Every non-empty caption of a prepared split, its stored embedding and the row of its image."""
    rows, cols = np.nonzero(np.vectorize(lambda c: bool(str(c).strip()), otypes=[bool])(split["captions"]))
    return (
        [str(split["captions"][r, c]) for r, c in zip(rows, cols)],
        split["embeddings"][rows, cols].astype(np.float32),
        rows,
    )


def _losses(
    pred: torch.Tensor, target: torch.Tensor, group: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``1 - cos`` to the own target, and InfoNCE over cos / temperature against the batch's
    other targets (other captions of the same image are left out of the negatives)."""
    p, t = F.normalize(pred, dim=1), F.normalize(target, dim=1)
    sim = p @ t.T
    cosine = 1 - sim.diagonal().mean()
    same = group[:, None] == group[None, :]
    same.fill_diagonal_(False)
    logits = (sim / temperature).masked_fill(same, float("-inf"))
    return cosine, F.cross_entropy(logits, torch.arange(len(p), device=p.device))


def fit_encoder(
    texts: list[str],
    targets: np.ndarray,
    groups: np.ndarray,
    sizes: Mapping[str, int] = NARROW_SIZES,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 5e-3,
    seed: int = 0,
    device: str = "auto",
    contrastive_weight: float = 0.1,
    temperature: float = 0.05,
    log: Callable[[str], None] = print,
) -> tuple[CharCNNRNN, list[dict]]:
    """A ``CharCNNRNN`` trained to map each caption to its stored embedding (``targets[i]``).

    Adam with a cosine-decaying learning rate; ``groups[i]`` is the image of caption ``i``.  The output
    layer is finally rescaled so that the mean output norm matches the mean target norm (on up to
    about 2,048 of the captions; cosines are unchanged), so encoded captions have the scale the GAN
    was trained on.  Returns the model (eval
    mode) and one history row per epoch.  It runs on the caller's ``torch.set_num_threads``: on busy
    shared cores one thread is much faster than two (the GRU's many small steps wait on each other).
    """
    targets = np.asarray(targets, dtype=np.float32)
    groups = np.asarray(groups)
    if targets.ndim != 2 or len(targets) != len(texts) or len(groups) != len(texts) or not texts:
        raise ValueError(
            f"fit_encoder: {len(texts)} texts, targets {targets.shape}, groups {groups.shape}: "
            "expected N texts, N x D targets and N groups"
        )
    if sizes.get("out", targets.shape[1]) != targets.shape[1]:
        raise ValueError(f"fit_encoder: sizes out {sizes['out']} but targets are {targets.shape[1]}-d")
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = CharCNNRNN(**{**sizes, "out": targets.shape[1]}).to(device)
    codes = char_codes(texts).to(device)
    target_t = torch.from_numpy(targets).to(device)
    group_t = torch.from_numpy(np.unique(groups, return_inverse=True)[1].reshape(-1)).to(device)
    order_rng = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps_per_epoch))
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        start, sums = time.perf_counter(), torch.zeros(3)
        for idx in torch.randperm(len(texts), generator=order_rng).split(batch_size):
            idx = idx.to(device)
            cosine, contrastive = _losses(model(one_hot(codes[idx])), target_t[idx], group_t[idx], temperature)
            loss = cosine + contrastive_weight * contrastive
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums += torch.stack([loss, cosine, contrastive]).detach().cpu() * len(idx)
        loss, cosine, contrastive = (sums / len(texts)).tolist()
        row = {
            "epoch": epoch,
            "loss": loss,
            "cosine_loss": cosine,
            "contrastive": contrastive,
            "seconds": time.perf_counter() - start,
        }
        history.append(row)
        log(
            f"text encoder epoch {epoch}/{epochs}: loss {loss:.4f} (1-cos {cosine:.4f}, "
            f"contrastive {contrastive:.3f}) {row['seconds']:.1f}s"
        )
    some = torch.arange(0, len(texts), max(1, len(texts) // 2048))  # enough captions for a mean norm
    pred = torch.from_numpy(encode(model, [texts[i] for i in some])).to(device)
    scale = float(target_t[some.to(device)].norm(dim=1).mean() / pred.norm(dim=1).mean().clamp_min(1e-12))
    with torch.no_grad():
        model.out.weight.mul_(scale)
        model.out.bias.mul_(scale)
    return model.eval(), history


def score_encoder(
    model: CharCNNRNN, texts: list[str], targets: np.ndarray, groups: np.ndarray, batch_size: int = 256
) -> dict[str, float]:
    """``test_cosine``: mean cosine of each encoded caption to its stored embedding; ``test_top1``: share
    of captions whose nearest stored embedding (cosine, among all of ``targets``) is of the same group."""
    pred = F.normalize(torch.from_numpy(encode(model, texts, batch_size)), dim=1)
    tgt = F.normalize(torch.from_numpy(np.asarray(targets, dtype=np.float32)), dim=1)
    groups_t = torch.from_numpy(np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1))
    hits = torch.cat(
        [
            groups_t[(pred[i : i + 4096] @ tgt.T).argmax(dim=1)] == groups_t[i : i + 4096]
            for i in range(0, len(pred), 4096)
        ]
    )
    return {"test_cosine": float((pred * tgt).sum(dim=1).mean()), "test_top1": float(hits.float().mean())}


def train_text_encoder(prepared: str | Path, params: Params, log: Callable[[str], None] = print) -> dict:
    """Fit (or import) the text encoder, score it on the test captions, write its weights and metrics."""
    cfg = params.text_encoder
    device = resolve_device(cfg.device)
    names = ("captions", "embeddings")
    train, test = read_prepared(prepared, "train", names), read_prepared(prepared, "test", names)
    texts, targets, groups = caption_pairs(train)
    start = time.perf_counter()
    if cfg.source == "reed":
        from ..models.reed_t7 import import_reed_t7

        t7 = Path(params.data.raw_dir) / cfg.reed_t7
        if not t7.is_file():
            raise ConfigError(
                f"{t7}: Reed's encoder not found (text_encoder.source is reed): put "
                f"{Path(cfg.reed_t7).name} into fetch.download_dir and run `gancls fetch`, "
                "or set text_encoder.source: fit"
            )
        state, sizes = import_reed_t7(t7)
        model = CharCNNRNN(**sizes)
        model.load_state_dict(state)
        model = model.to(device).eval()
        history, meta = [], {"source": "reed", "file": t7.name, "sha256": file_digest(t7, "sha256")}
    else:
        model, history = fit_encoder(
            texts,
            targets,
            groups,
            sizes=cfg.sizes.model_dump(),
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            seed=int(params.reference_seed),
            device=device,
            contrastive_weight=cfg.contrastive_weight,
            temperature=cfg.temperature,
            log=log,
        )
        meta = {"source": "fit", "epochs": cfg.epochs, "train_captions": len(texts)}
    seconds = time.perf_counter() - start
    if model.sizes["out"] != targets.shape[1]:
        raise ConfigError(
            f"{cfg.reed_t7}: the encoder gives {model.sizes['out']}-d embeddings, "
            f"{prepared} holds {targets.shape[1]}-d ones"
        )
    test_texts, test_targets, test_groups = caption_pairs(test)
    some = np.arange(0, len(texts), max(1, len(texts) // len(test_texts)))  # as many training captions
    metrics = {
        **score_encoder(model, test_texts, test_targets, test_groups),
        **{
            f"train_{k[5:]}": v
            for k, v in score_encoder(model, [texts[i] for i in some], targets[some], groups[some]).items()
        },
        "source": cfg.source,
        "parameters": sum(p.numel() for p in model.parameters()),
        "widths": "conv {c1}/{c2}/{c3}, GRU {hidden}, out {out}".format(**model.sizes),
        "test_captions": len(test_texts),
        "train_captions": len(texts),
        "seconds": round(seconds, 1),
        "final_loss": history[-1]["loss"] if history else None,
    }
    save_encoder(cfg.weights, model.state_dict(), model.sizes, meta)
    write_json(cfg.metrics, metrics)
    return metrics
