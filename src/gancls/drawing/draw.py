"""``gancls sample``: draw images with the trained generator, as a captioned grid.

* ``--text`` / ``--file``: sentences of your own, turned into embeddings by Reed's char-CNN-RNN
  text encoder (``gancls.models.text_encoder``; the file ``text_encoder.weights`` that the stage
  ``train-text-encoder`` writes: fitted to the data's captions, or Reed's pretrained CUB encoder);
* ``--query`` / ``--caption-id``: captions of the prepared test split, with their stored embeddings.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ..config import resolve_device
from ..data.prepared import read_prepared
from ..models.generator_file import load_generator
from .grids import captioned_grid


class SentenceError(ValueError):
    """A request for sentences that cannot be drawn; the message says which and why."""


class NoMatch(LookupError):
    """No test caption matches the query; the message says what was searched."""


def find_captions(
    captions: np.ndarray, keys: np.ndarray, query: str | None = None, caption_id: str | None = None
) -> list[tuple[int, int]]:
    """(image row, caption index) of the matching test captions.

    ``query``: a phrase that must appear in the caption as whole words, case-insensitive
    ("red body" matches "... a red body and ..." but not "red wings and a blue body").
    ``caption_id``: ``<key>`` (all captions of that test image) or ``<key>#<i>`` (caption i).
    """
    if caption_id:
        key, _, idx = caption_id.partition("#")
        rows = [i for i, k in enumerate(keys) if str(k) == key]
        if not rows:
            raise NoMatch(f"no test image with key {key!r} (keys look like {str(keys[0])!r})")
        if idx:
            if not idx.isdigit() or int(idx) >= captions.shape[1]:
                raise NoMatch(f"caption index {idx!r} is not in 0..{captions.shape[1] - 1}")
            return [(rows[0], int(idx))]
        return [(rows[0], j) for j in range(captions.shape[1]) if str(captions[rows[0], j])]
    if not query or not query.strip():
        raise NoMatch("give --query TEXT or --caption-id KEY[#i]")
    pattern = re.compile(r"\b" + r"\W+".join(re.escape(w) for w in query.lower().split()) + r"\b")
    return [
        (i, j)
        for i in range(captions.shape[0])
        for j in range(captions.shape[1])
        if pattern.search(str(captions[i, j]).lower())
    ]


@torch.no_grad()
def sample_images(
    generator_path: str | Path,
    prepared: str | Path,
    out: str | Path,
    *,
    query: str | None = None,
    caption_id: str | None = None,
    per_caption: int = 8,
    max_captions: int = 8,
    seed: int = 0,
    device: str = "auto",
) -> dict:
    """Write a grid: one row per matching caption (up to ``max_captions``), ``per_caption`` images."""
    per_caption = whole_number(per_caption, "--n", 1, MAX_IMAGES)
    seed = whole_number(seed, "--seed", 0, MAX_SEED)
    if max_captions < 1:
        raise SentenceError("--max-captions must be at least 1")
    test = read_prepared(prepared, "test")
    found = find_captions(test["captions"], test["keys"], query, caption_id)
    if not found:
        raise NoMatch(f"no test caption of {prepared} matches {query!r}")
    rng = np.random.default_rng(seed)
    picked = [found[i] for i in sorted(rng.choice(len(found), min(max_captions, len(found)), replace=False))]
    dev = resolve_device(device)
    g, mcfg = load_generator(generator_path, dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(len(picked) * per_caption, mcfg.z_dim, generator=gen).to(dev)
    emb = torch.from_numpy(np.stack([test["embeddings"][i, j] for i, j in picked])).to(dev)
    images = g(z, emb.repeat_interleave(per_caption, dim=0))
    labels = [f"{test['captions'][i, j]}  [{test['keys'][i]}#{j}]" for i, j in picked]
    title = (
        f"query {query!r}: {len(picked)} of {len(found)} matching test captions" if query else f"caption {caption_id}"
    )
    captioned_grid(images, labels, per_caption, out, title=title)
    return {"grid": str(out), "captions": len(picked), "matches": len(found)}


MAX_IMAGES = 64  # images per sentence (the grid's columns, the demo page's slider)
MAX_SEED = 2**63 - 1


def whole_number(value, name: str, low: int, high: int) -> int:
    """``value`` (an int, an integral float, or its text, as the CLI and a page request give it) as an
    int in ``low..high``; SentenceError naming ``name`` otherwise. The CLI and the demo page share it,
    so a bad count or seed gets the same one line from both."""
    number = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    if number is None or not low <= number <= high:
        raise SentenceError(f"{name} must be a whole number from {low} to {high}, not {str(value)[:40]!r}")
    return number


def check_sentences(texts: list[str], per_sentence: int, warn=print) -> None:
    """SentenceError (one line) for no sentence, ``per_sentence`` outside 1..MAX_IMAGES, or a sentence
    that is not text, is empty or only spaces, or has no character of Reed's alphabet; ``warn`` gets
    what of a sentence the encoder does not see (characters past its 201, unknown ones)."""
    from ..models.text_encoder import check_text

    whole_number(per_sentence, "--n", 1, MAX_IMAGES)
    if not texts:
        raise SentenceError("give --text SENTENCE (or --file with one sentence a line)")
    for i, text in enumerate(texts, 1):
        if not isinstance(text, str):
            raise SentenceError(f"sentence {i}: not text ({type(text).__name__})")
        try:
            for warning in check_text(text):
                warn(f"sentence {i}: {warning}")
        except ValueError as exc:
            raise SentenceError(f"sentence {i}: {exc}") from None


def load_text_to_image(generator_path: str | Path, encoder_path: str | Path, device: str = "auto"):
    """(G, its ``model:`` params, the text encoder, the device), checked to fit each other."""
    from ..models.text_encoder import load_encoder

    if not Path(encoder_path).is_file():
        raise SentenceError(
            f"{encoder_path} (text_encoder.weights): no text encoder there; `make run` or "
            "`dvc repro train-text-encoder` makes one, `gancls import-encoder FILE.t7` converts "
            "Reed's pretrained CUB encoder (docs/DEMO.md 'Which encoder')"
        )
    dev = resolve_device(device)
    g, mcfg = load_generator(generator_path, dev)
    encoder = load_encoder(encoder_path, dev)
    if encoder.sizes["out"] != mcfg.embedding_dim:
        raise SentenceError(
            f"{encoder_path}: the encoder gives {encoder.sizes['out']}-d embeddings, the generator "
            f"{generator_path} reads {mcfg.embedding_dim}-d ones"
        )
    return g, mcfg, encoder, dev


@torch.no_grad()
def draw_texts(g, mcfg, encoder, texts: list[str], per_sentence: int, seed: int) -> torch.Tensor:
    """G's images (``len(texts) * per_sentence``, 3, 64, 64) in [-1, 1], a sentence's images together;
    the noise is drawn on the CPU from ``seed``, so a seed gives the same images on any device."""
    from ..models.text_encoder import encode

    dev = next(g.parameters()).device
    emb = torch.from_numpy(encode(encoder, texts)).to(dev)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(len(texts) * per_sentence, mcfg.z_dim, generator=gen).to(dev)
    return g(z, emb.repeat_interleave(per_sentence, dim=0))


@torch.no_grad()
def draw_sentences(
    generator_path: str | Path,
    encoder_path: str | Path,
    texts: list[str],
    out: str | Path,
    *,
    per_sentence: int = 8,
    seed: int = 0,
    device: str = "auto",
    h5: str | Path | None = None,
    warn=print,
) -> dict:
    """Encode ``texts`` with the text encoder, draw ``per_sentence`` images each: a grid (a row per
    sentence) and, with ``h5``, ``images`` uint8 ``[sentences, n, 64, 64, 3]`` and ``texts``.

    SentenceError (one line) for an empty sentence or one with no character of Reed's alphabet;
    ``warn`` gets what of a sentence the encoder does not see (characters past 201, unknown ones).
    """
    from .generate import to_uint8

    per_sentence = whole_number(per_sentence, "--n", 1, MAX_IMAGES)
    seed = whole_number(seed, "--seed", 0, MAX_SEED)
    check_sentences(texts, per_sentence, warn)
    g, mcfg, encoder, _ = load_text_to_image(generator_path, encoder_path, device)
    images = draw_texts(g, mcfg, encoder, texts, per_sentence, seed)
    captioned_grid(
        images,
        list(texts),
        per_sentence,
        out,
        title=f"{len(texts)} sentences, {per_sentence} noise vectors each (encoder {Path(encoder_path).name})",
    )
    result = {"grid": str(out), "sentences": len(texts), "per_sentence": per_sentence}
    if h5:
        import h5py

        from ..files import atomic_path

        pixels = to_uint8(images).reshape(len(texts), per_sentence, *images.shape[2:], 3)
        with atomic_path(h5) as tmp, h5py.File(tmp, "w") as f:
            f.create_dataset("images", data=pixels)
            f.create_dataset("texts", data=np.array(texts, dtype=object), dtype=h5py.string_dtype())
        result["h5"] = str(h5)
    return result
