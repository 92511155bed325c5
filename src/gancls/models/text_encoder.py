"""Reed's char-CNN-RNN text encoder: a new sentence becomes an embedding (REFERENCE.md §6).

* **Encoding** -- ``encode_text`` writes each sentence as Reed's demo does: one-hot columns of
  ``ALPHABET`` (1-based; the repeated ``'-'`` keeps its last code, 60), left-aligned in ``MAX_LEN``
  = 201 steps, no lowercasing; unknown characters and the padding are all-zero columns and characters
  past 201 are dropped.  ``check_text`` says what of a sentence the encoder will not see.
* **Model** -- ``CharCNNRNN``: three ``Conv1d`` (kernel 4) with ReLU, max-pool 3/3 after the first
  two (201 -> 18 steps), Reed's ``FixedGRU`` written out from his equations, the mean of its hidden
  states, a ``Linear`` to the embedding.  ``REED_SIZES`` are Reed's widths; ``NARROW_SIZES`` are
  what the sample's encoder is fitted with on two CPU cores in about a minute.
* **Files** -- ``save_encoder`` / ``load_encoder`` keep an encoder as plain tensors read with
  ``torch.load(weights_only=True)``.  Where the weights come from: ``gancls.models.reed_t7`` (Reed's
  pretrained ``.t7``) or ``gancls.training.train_text_encoder`` (fitted to a dataset's own embeddings).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..files import atomic_path, save_torch
from .alphabet import ALPHABET
from .alphabet import CODE as _CODE

MAX_LEN = 201

REED_SIZES: Mapping[str, int] = MappingProxyType(
    {"c1": 384, "c2": 512, "c3": 512, "hidden": 512, "out": 1024, "alphabet": len(ALPHABET), "kernel": 4, "pool": 3}
)
"""Reed's CUB encoder (``HybridCNNLong`` + ``FixedGRU``, cnn_dim 512, emb_dim 1024): 4,045,184 parameters."""
NARROW_SIZES: Mapping[str, int] = MappingProxyType({"c1": 64, "c2": 64, "c3": 64, "hidden": 64})
"""The widths ``fit_encoder`` uses by default (the output width is the targets'): on the sample's test
classes, its 10 epochs reach cosine 0.989 and top-1 0.847 (ceilings 0.9988 and 0.851) in 95 s on one
thread of two busy shared cores (about 5.5 s an epoch with two threads on quiet ones); widths of 32
reach only cosine 0.81, and 128 takes twice as long per epoch."""

FORMAT = 1
KIND = "gancls.models.text_encoder"


class EncoderImportError(ValueError):
    """A text-encoder file (Reed's .t7 or a saved encoder) cannot be used; the message names it."""


# --- Reed's encoding -------------------------------------------------------------------------------


def char_codes(texts: list[str]) -> torch.Tensor:
    """``[B, MAX_LEN]`` uint8 alphabet codes (0: unknown character or padding)."""
    out = torch.zeros(len(texts), MAX_LEN, dtype=torch.uint8)
    for b, text in enumerate(texts):
        codes = [_CODE.get(ch, 0) for ch in text[:MAX_LEN]]
        out[b, : len(codes)] = torch.tensor(codes, dtype=torch.uint8)
    return out


def one_hot(codes: torch.Tensor) -> torch.Tensor:
    return F.one_hot(codes.long(), len(ALPHABET) + 1)[..., 1:].float()


def encode_text(texts: list[str]) -> torch.Tensor:
    """Reed's one-hot input ``[B, 201, 70]`` float: column ``code - 1`` set, zero for unknown and padding."""
    return one_hot(char_codes(texts))


def check_text(text: str) -> list[str]:
    """Warnings on what of ``text`` the encoder will not see; ``ValueError`` if it would see nothing."""
    if not text.strip():
        raise ValueError("empty text: nothing to encode" + (" (only whitespace)" if text else ""))
    unknown = sorted({ch for ch in text[:MAX_LEN] if ch not in _CODE})
    if not any(ch in _CODE for ch in text[:MAX_LEN] if not ch.isspace()):
        raise ValueError(
            f"text {text[:40]!r} has no character of Reed's alphabet (lowercase letters, digits, punctuation, space)"
        )
    warnings = []
    if unknown:
        warnings.append(
            f"characters outside Reed's alphabet are left blank: {''.join(unknown)!r}"
            + (" (it has no capitals)" if any(ch.isupper() for ch in unknown) else "")
        )
    if len(text) > MAX_LEN:
        warnings.append(f"text is {len(text)} characters long: the {len(text) - MAX_LEN} past {MAX_LEN} are dropped")
    return warnings


# --- the model -------------------------------------------------------------------------------------


class FixedGRU(nn.Module):
    """Reed's ``FixedGRU`` (modules/FixedGRU.lua, ``avg`` = 1): the mean of its hidden states.

    ``h_1 = tanh(W x_1 + b)``, then ``z = σ(Wz x + Uz h + ...)``, ``r = σ(Wr x + Ur h + ...)``,
    ``h~ = tanh(W x + U (r ⊙ h) + ...)``, ``h = z ⊙ h~ + (1 - z) ⊙ h_prev``; every Linear has its bias.
    Parameters: ``x_proj`` rows [update; reset; candidate] (Reed's i2h_update, i2h_reset, i2h),
    ``h_gates`` rows [update; reset] (h2h_update, h2h_reset), ``h_cand`` (h2h).
    """

    def __init__(self, input_size: int, hidden: int):
        super().__init__()
        self.hidden = hidden
        self.x_proj = nn.Linear(input_size, 3 * hidden)
        self.h_gates = nn.Linear(hidden, 2 * hidden)
        self.h_cand = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, input_size]`` -> ``[B, hidden]``."""
        xp = self.x_proj(x)  # the input projections of every step in one matmul
        x_gates, x_cand = xp[..., : 2 * self.hidden], xp[..., 2 * self.hidden :]
        h = torch.tanh(x_cand[:, 0])
        total = h
        for t in range(1, x.shape[1]):
            z, r = torch.sigmoid(x_gates[:, t] + self.h_gates(h)).chunk(2, dim=1)
            cand = torch.tanh(x_cand[:, t] + self.h_cand(r * h))
            h = z * cand + (1 - z) * h
            total = total + h
        return total / x.shape[1]


def seq_len(length: int = MAX_LEN, kernel: int = 4, pool: int = 3) -> int:
    """Steps left after conv, pool, conv, pool, conv: 18 for Reed's 201 characters."""
    n = (length - kernel + 1) // pool
    n = (n - kernel + 1) // pool
    return n - kernel + 1


class CharCNNRNN(nn.Module):
    """Reed's ``HybridCNNLong``: one-hot ``[B, 201, alphabet]`` -> embedding ``[B, out]``."""

    def __init__(
        self,
        c1: int = 384,
        c2: int = 512,
        c3: int = 512,
        hidden: int = 512,
        out: int = 1024,
        alphabet: int = 70,
        kernel: int = 4,
        pool: int = 3,
    ):
        super().__init__()
        if seq_len(MAX_LEN, kernel, pool) < 1:
            raise ValueError(f"kernel {kernel} and pool {pool} leave no step of {MAX_LEN} characters")
        self.sizes = {
            "c1": c1,
            "c2": c2,
            "c3": c3,
            "hidden": hidden,
            "out": out,
            "alphabet": alphabet,
            "kernel": kernel,
            "pool": pool,
        }
        self.conv1 = nn.Conv1d(alphabet, c1, kernel)
        self.conv2 = nn.Conv1d(c1, c2, kernel)
        self.conv3 = nn.Conv1d(c2, c3, kernel)
        self.pool = nn.MaxPool1d(pool, pool)
        self.gru = FixedGRU(c3, hidden)
        self.out = nn.Linear(hidden, out)

    def forward(self, onehot: torch.Tensor) -> torch.Tensor:
        x = onehot.transpose(1, 2)
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.conv3(x))
        return self.out(self.gru(x.transpose(1, 2)))


@torch.no_grad()
def encode(model: CharCNNRNN, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Embeddings ``[N, out]`` (float32) of ``texts``, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    codes = char_codes(texts)
    parts = [model(one_hot(codes[i : i + batch_size].to(device))).cpu() for i in range(0, len(texts), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.sizes["out"]), np.float32)


def why(exc: BaseException) -> str:
    """The first line of an exception, with its type: what a one-line refusal quotes."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- weights-only files ----------------------------------------------------------------------------


def save_encoder(
    path: str | Path, state_dict: Mapping[str, torch.Tensor], sizes: Mapping[str, int], meta: dict
) -> Path:
    """Write the encoder atomically as plain tensors and values (``meta``: JSON-like, e.g. its source)."""
    json.dumps(meta)  # TypeError on anything but plain values: weights_only loading would refuse it
    state = {k: v.detach().cpu().clone() for k, v in state_dict.items()}
    CharCNNRNN(**sizes).load_state_dict(state)  # refuse to write a file that would not load
    with atomic_path(path) as tmp:
        save_torch({"format": FORMAT, "kind": KIND, "sizes": dict(sizes), "state_dict": state, "meta": meta}, tmp)
    return Path(path)


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> CharCNNRNN:
    """The encoder saved by ``save_encoder``, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise EncoderImportError(f"{path}: encoder file not found")
    try:
        saved = torch.load(path, map_location=device, weights_only=True)
        if not isinstance(saved, dict) or saved.get("kind") != KIND or saved.get("format") != FORMAT:
            raise ValueError(f"expected a {KIND} file of format {FORMAT}")
        model = CharCNNRNN(**saved["sizes"])
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # noqa: BLE001 - any failure means a bad file
        raise EncoderImportError(f"{path}: not a loadable gancls text encoder ({why(exc)})") from exc
    return model.to(device).eval()
