"""Text-conditioning score: does a generated image show what its caption states?

A small image classifier is trained on real prepared images (``gancls train-scorer``) and applied
in ``evaluate`` to the images generated from test captions.  What it recognises depends on the data:

* the embedded sample (``data.source: sample``): the attributes a caption can name, one head per
  kind in ``scorer.kinds`` (body, wing, head and beak colour by default).  An image's labels are
  the attributes its own captions state (``gancls.data.synthetic.mentions`` inverts the caption templates,
  so these are the sample's attributes, never anything derived from the generator).  Trained on
  the training split, checked on the test split (whose classes it has never seen).
* real CUB (``data.source: cub``): the class of the image, among the test split's classes.  Trained
  on a part of every test class, checked on the rest (``scorer.heldout_fraction``).

``text_match`` then reports, over (generated image, caption) pairs:

* ``accuracy``: the fraction of stated labels that the classifier finds in the generated image;
* ``chance``: what labels drawn at random with the captions' own label frequencies would score,
  sum over kinds of (share of statements) * sum_v p_v^2;
* ``real_ceiling``: the same classifier on held-out real images, judged against their own captions;
* ``mismatched_accuracy``: the same generated images judged against a caption of another class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Params, ScorerParams, resolve_device
from ..data.prepared import center_crop, read_prepared
from ..files import atomic_path, save_torch, write_json

CLASS_KIND = "class"


# --- labels -------------------------------------------------------------------------------------


def caption_labels(caption: str, class_id: int, kinds: list[str], source: str) -> dict[str, str]:
    """What a caption states, restricted to the scored kinds: {kind: value}."""
    if source == "cub":
        return {CLASS_KIND: str(int(class_id))}
    from ..data.synthetic import mentions

    return {k: v for k, v in mentions(caption) if k in kinds}


def scored_kinds(cfg: ScorerParams, source: str) -> list[str]:
    """What ``text_match`` scores: the attributes of ``scorer.kinds`` (CUB: the class)."""
    return [CLASS_KIND] if source == "cub" else list(cfg.kinds)


def head_kinds(cfg: ScorerParams, source: str) -> list[str]:
    """What the classifier recognises: the scored kinds, then (sample) ``scorer.free_kinds``, the
    attributes the diversity score counts where a caption leaves them free."""
    return [CLASS_KIND] if source == "cub" else list(cfg.kinds) + [k for k in cfg.free_kinds if k not in cfg.kinds]


def vocabulary(kinds: list[str], source: str, class_ids) -> dict[str, list[str]]:
    """The values each head can predict."""
    if source == "cub":
        return {CLASS_KIND: [str(int(c)) for c in sorted(set(int(c) for c in class_ids))]}
    from ..data.synthetic import VOCAB

    unknown = [k for k in kinds if k not in VOCAB]
    if unknown:
        raise ValueError(f"scorer.kinds: {unknown} are not attributes of the sample ({sorted(VOCAB)})")
    return {k: list(VOCAB[k]) for k in kinds}


def image_targets(split: dict, vocab: dict[str, list[str]], source: str) -> np.ndarray:
    """(N, kinds) value indices of each image, -1 where none of its captions states that kind."""
    kinds = list(vocab)
    out = np.full((len(split["keys"]), len(kinds)), -1, dtype=np.int64)
    for i, (caps, cid) in enumerate(zip(split["captions"], split["class_ids"])):
        stated: dict[str, str] = {}
        for cap in caps:
            stated.update(caption_labels(str(cap), int(cid), kinds, source))
        for j, k in enumerate(kinds):
            if k in stated:
                out[i, j] = vocab[k].index(stated[k])
    return out


# --- the classifier -----------------------------------------------------------------------------


class Scorer(nn.Module):
    """Four stride-2 convolutions (64 -> 4) and one linear head per kind; input uint8 NHWC 64x64."""

    def __init__(self, vocab: dict[str, list[str]], width: int = 32):
        super().__init__()
        self.vocab = {k: list(v) for k, v in vocab.items()}
        layers: list[nn.Module] = []
        cin = 3
        for cout in (width, width * 2, width * 4, width * 4):
            layers += [
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            cin = cout
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.3))
        self.heads = nn.ModuleList(nn.Linear(cin * 16, len(v)) for v in vocab.values())

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """uint8 (N, 64, 64, 3) -> one logits tensor per kind."""
        x = images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
        h = self.body(x)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 256, device="cpu") -> np.ndarray:
        """uint8 (N, 64, 64, 3) -> (N, kinds) predicted value indices."""
        self.eval()
        out = []
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size])).to(device)
            out.append(torch.stack([lg.argmax(1) for lg in self(x)], 1).cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.vocab)), np.int64)


def _random_crops(images: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    s = images.shape[1]
    top, left = torch.randint(0, s - size + 1, (2,), generator=gen).tolist()
    out = images[:, top : top + size, left : left + size]
    flip = torch.rand(len(images), generator=gen) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(2), out)


def heldout_mask(class_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """CUB: the held-out part of every class (a fixed random ``fraction`` of its images)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(class_ids), dtype=bool)
    for c in np.unique(class_ids):
        idx = np.flatnonzero(class_ids == c)
        rng.shuffle(idx)
        mask[idx[: max(1, int(round(len(idx) * fraction)))]] = True
    return mask


def accuracy(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Per column and overall accuracy over the entries with a target (>= 0)."""
    known = target >= 0
    hit = (pred == target) & known
    return {
        "overall": float(hit.sum() / max(known.sum(), 1)),
        "per_kind": [float(hit[:, j].sum() / max(known[:, j].sum(), 1)) for j in range(target.shape[1])],
    }


def train_scorer(prepared: str | Path, params: Params, out: str | Path, metrics: str | Path) -> dict:
    """Train the classifier on real prepared images; save it with its held-out split and accuracy."""
    cfg, source = params.scorer, params.data.source
    seed = int(params.reference_seed)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    device = resolve_device(cfg.device)
    size = int(params.model.image_size)
    kinds, heads = scored_kinds(cfg, source), head_kinds(cfg, source)
    if source == "cub":  # classes of the test split: a part of each class to train on, the rest to check
        data = read_prepared(prepared, "test")
        vocab = vocabulary(heads, source, data["class_ids"])
        targets = image_targets(data, vocab, source)
        held = heldout_mask(data["class_ids"], float(cfg.heldout_fraction), seed)
        train_x, train_y = data["images"][~held], targets[~held]
        check_x, check_y = data["images"][held], targets[held]
        heldout_keys = [str(k) for k in data["keys"][held]]
        trained_on = f"test split, {1 - float(cfg.heldout_fraction):.0%} of each class"
    else:  # attributes: train on the training split, check on the unseen test classes
        tr, te = read_prepared(prepared, "train"), read_prepared(prepared, "test")
        vocab = vocabulary(heads, source, tr["class_ids"])
        train_x, train_y = tr["images"], image_targets(tr, vocab, source)
        check_x, check_y = te["images"], image_targets(te, vocab, source)
        heldout_keys = [str(k) for k in te["keys"]]
        trained_on = "training split"
    if len(train_x) == 0 or len(check_x) == 0:
        raise ValueError(f"{prepared}: not enough images to train and check the scorer")

    model = Scorer(vocab, int(cfg.width)).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    x_all, y_all = torch.from_numpy(train_x), torch.from_numpy(train_y)
    bs, epochs = int(cfg.batch_size), int(cfg.epochs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        for s in range(0, len(order), bs):
            idx = order[s : s + bs]
            if len(idx) < 2:
                continue
            x = _random_crops(x_all[idx], size, gen).to(device)
            y = y_all[idx].to(device)
            loss = sum(F.cross_entropy(lg, y[:, j], ignore_index=-1) for j, lg in enumerate(model(x)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    pred = model.predict(center_crop(check_x, size), device=device)
    acc = accuracy(pred, check_y)
    scored = accuracy(pred[:, : len(kinds)], check_y[:, : len(kinds)])
    summary = {
        "labels": kinds,
        "free_kinds": heads[len(kinds) :],
        "trained_on": trained_on,
        "n_train": int(len(train_x)),
        "n_heldout": int(len(check_x)),
        "heldout_accuracy": round(scored["overall"], 4),
        "heldout_accuracy_per_kind": {k: round(a, 4) for k, a in zip(heads, acc["per_kind"])},
    }
    with atomic_path(out) as tmp:
        save_torch(
            {
                "state": model.state_dict(),
                "vocab": vocab,
                "text_kinds": kinds,
                "width": int(cfg.width),
                "source": source,
                "heldout_keys": heldout_keys,
                "summary": summary,
            },
            tmp,
        )
    write_json(metrics, summary)
    return summary


def load_scorer(path: str | Path, device="cpu") -> tuple[Scorer, dict]:
    state = torch.load(path, map_location=device, weights_only=True)
    model = Scorer(state["vocab"], state["width"])
    model.load_state_dict(state["state"])
    return model.to(device).eval(), state


# --- the score ----------------------------------------------------------------------------------


def _hits(pred: np.ndarray, stated: list[dict[str, str]], vocab: dict[str, list[str]]):
    """Per pair, per kind: 1 hit, 0 miss, -1 not stated."""
    kinds = list(vocab)
    out = np.full((len(stated), len(kinds)), -1, dtype=np.int64)
    for i, labels in enumerate(stated):
        for j, k in enumerate(kinds):
            if k in labels:
                v = labels[k]
                out[i, j] = int(v in vocab[k] and pred[i, j] == vocab[k].index(v))
    return out


def _rate(hits: np.ndarray) -> float:
    known = hits >= 0
    return float(hits[known].sum() / known.sum()) if known.any() else float("nan")


def chance_level(stated: list[dict[str, str]], kinds: list[str]) -> float:
    """sum_k (statements of k / all statements) * sum_v p(v | k)^2, from the captions themselves."""
    total = sum(len(s) for s in stated)
    if total == 0:
        return float("nan")
    out = 0.0
    for k in kinds:
        values = [s[k] for s in stated if k in s]
        if values:
            _, counts = np.unique(values, return_counts=True)
            p = counts / counts.sum()
            out += len(values) / total * float((p**2).sum())
    return out


def mismatched_partners(class_ids: np.ndarray, seed: int) -> np.ndarray:
    """For each pair, another pair whose caption belongs to an image of a different class."""
    rng = np.random.default_rng(seed)
    n = len(class_ids)
    partner = rng.integers(0, n, n)
    for _ in range(100):
        same = class_ids[partner] == class_ids
        if not same.any():
            break
        partner[same] = rng.integers(0, n, int(same.sum()))
    if (class_ids[partner] == class_ids).any():
        raise ValueError("the mismatched control needs captions of at least two classes")
    return partner


def text_match(
    model: Scorer,
    state: dict,
    fake: np.ndarray,
    real: np.ndarray,
    captions: list[str],
    class_ids: np.ndarray,
    real_index: np.ndarray,
    real_keys: np.ndarray,
    seed: int,
    device="cpu",
) -> dict:
    """The text-conditioning score of generated images (one per caption) and its references.

    ``fake[i]`` was generated from ``captions[i]``, the caption of the real test image
    ``real[real_index[i]]`` (class ``class_ids[i]``, key ``real_keys[real_index[i]]``).
    """
    source = state["source"]
    kinds = state.get("text_kinds", list(state["vocab"]))  # the heads text_match scores (free kinds aside)
    cols = [list(state["vocab"]).index(k) for k in kinds]
    vocab = {k: state["vocab"][k] for k in kinds}
    stated = [caption_labels(c, int(k), kinds, source) for c, k in zip(captions, class_ids)]
    pred_fake = model.predict(fake, device=device)[:, cols]
    hits = _hits(pred_fake, stated, vocab)
    partner = mismatched_partners(np.asarray(class_ids), seed)
    mism = _hits(pred_fake, [stated[j] for j in partner], vocab)

    heldout = set(state["heldout_keys"])
    keep = np.array([str(real_keys[r]) in heldout for r in real_index])
    size = fake.shape[1]
    pred_real_img = model.predict(center_crop(real, size), device=device)[:, cols]
    real_hits = _hits(pred_real_img[real_index[keep]], [s for s, k in zip(stated, keep) if k], vocab)
    result = {
        "accuracy": _rate(hits),
        "chance": chance_level(stated, kinds),
        "real_ceiling": _rate(real_hits),
        "mismatched_accuracy": _rate(mism),
        "per_kind": {k: _rate(hits[:, [j]]) for j, k in enumerate(kinds)},
        "labels": kinds,
        "n_pairs": int(len(stated)),
        "n_statements": int((hits >= 0).sum()),
        "n_ceiling_pairs": int(keep.sum()),
    }
    result["of_ceiling"] = result["accuracy"] / result["real_ceiling"] if result["real_ceiling"] else None
    result["over_mismatched"] = (
        result["accuracy"] / result["mismatched_accuracy"] if result["mismatched_accuracy"] else None
    )
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()}


def score_generated(
    generated: str | Path,
    test: dict,
    scorer: tuple[Scorer, dict],
    seed: int,
    device="cpu",
    dataset: str = "images",
) -> dict:
    """``text_match`` of the images in a ``gancls generate`` file against their captions (``dataset``:
    ``images``, drawn from the stored embeddings, or ``encoded_images``, from the encoded captions).
    ``test``: the prepared test split (``read_prepared``); ``scorer``: ``load_scorer``'s model and state."""
    import h5py

    with h5py.File(generated, "r") as h5:
        if dataset not in h5:
            raise KeyError(f"{generated}: no dataset {dataset!r}; rerun `gancls generate`")
        fake = h5[dataset][()]
        image_index = h5["image_index"][()]
        class_ids = h5["class_ids"][()]
        captions = [str(c) for c in h5["captions"].asstr()[()]]
    model, state = scorer
    return text_match(model, state, fake, test["images"], captions, class_ids, image_index, test["keys"], seed, device)
