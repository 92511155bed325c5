"""Reed's char-CNN-RNN text encoder: a new sentence becomes an embedding (REFERENCE.md §6).

* **Encoding** -- ``encode_text`` writes each sentence as Reed's demo does: one-hot columns of
  ``ALPHABET`` (1-based; the repeated ``'-'`` keeps its last code, 60), left-aligned in ``MAX_LEN``
  = 201 steps, no lowercasing; unknown characters and the padding are all-zero columns and characters
  past 201 are dropped.  ``check_text`` says what of a sentence the encoder will not see.
* **Model** -- ``CharCNNRNN``: three ``Conv1d`` (kernel 4) with ReLU, max-pool 3/3 after the first
  two (201 -> 18 steps), Reed's ``FixedGRU`` written out from his equations, the mean of its hidden
  states, a ``Linear`` to the embedding.  ``REED_SIZES`` are Reed's widths; ``NARROW_SIZES`` are
  what ``fit_encoder`` trains on two CPU cores in a minute or two.
* **Reed's weights** -- ``import_reed_t7`` reads his ``.t7`` (a training checkpoint holding
  ``protos.enc_doc``, or the bare encoder) with ``torchfile``, which parses data and runs nothing;
  ``save_encoder`` / ``load_encoder`` keep the result as plain tensors read with
  ``torch.load(weights_only=True)``.
* **Fitting** -- without Reed's file, ``fit_encoder`` learns a dataset's own (caption, stored
  embedding) pairs: ``1 - cosine`` to the caption's own embedding plus an in-batch contrastive term;
  ``score_encoder`` measures cosine and caption-to-image retrieval on held-out captions.
"""
from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F
import torchfile  # parses Torch7 data only: no pickle, no code
from torch import nn

from .config import atomic_path, resolve_device, save_torch
from .layouts import REED_ALPHABET

# Reed's alphabet (icml2016 donkey_folder_txt.lua), the one his .t7 caption codes use too.
ALPHABET = REED_ALPHABET
MAX_LEN = 201
_CODE = {ch: i for i, ch in enumerate(ALPHABET, 1)}  # a repeated character keeps its last code

REED_SIZES: Mapping[str, int] = MappingProxyType({"c1": 384, "c2": 512, "c3": 512, "hidden": 512, "out": 1024,
                                                  "alphabet": len(ALPHABET), "kernel": 4, "pool": 3})
"""Reed's CUB encoder (``HybridCNNLong`` + ``FixedGRU``, cnn_dim 512, emb_dim 1024): 4,045,184 parameters."""
NARROW_SIZES: Mapping[str, int] = MappingProxyType({"c1": 64, "c2": 64, "c3": 64, "hidden": 64})
"""The widths ``fit_encoder`` uses by default (the output width is the targets'): on the sample's test
classes, its 10 epochs reach cosine 0.989 and top-1 0.847 (ceilings 0.9988 and 0.851) in 95 s on one
thread of two busy shared cores (about 5.5 s an epoch with two threads on quiet ones); widths of 32
reach only cosine 0.81, and 128 takes twice as long per epoch."""

FORMAT = 1
KIND = "gancls.text_encoder"


class EncoderImportError(ValueError):
    """A text-encoder file (Reed's .t7 or a saved encoder) cannot be used; the message names it."""


# --- Reed's encoding -------------------------------------------------------------------------------

def _codes(texts: list[str]) -> torch.Tensor:
    """``[B, MAX_LEN]`` uint8 alphabet codes (0: unknown character or padding)."""
    out = torch.zeros(len(texts), MAX_LEN, dtype=torch.uint8)
    for b, text in enumerate(texts):
        codes = [_CODE.get(ch, 0) for ch in text[:MAX_LEN]]
        out[b, :len(codes)] = torch.tensor(codes, dtype=torch.uint8)
    return out


def _one_hot(codes: torch.Tensor) -> torch.Tensor:
    return F.one_hot(codes.long(), len(ALPHABET) + 1)[..., 1:].float()


def encode_text(texts: list[str]) -> torch.Tensor:
    """Reed's one-hot input ``[B, 201, 70]`` float: column ``code - 1`` set, zero for unknown and padding."""
    return _one_hot(_codes(texts))


def check_text(text: str) -> list[str]:
    """Warnings on what of ``text`` the encoder will not see; ``ValueError`` if it would see nothing."""
    if not text:
        raise ValueError("empty text: nothing to encode")
    unknown = sorted({ch for ch in text[:MAX_LEN] if ch not in _CODE})
    if len(unknown) == len(set(text[:MAX_LEN])):
        raise ValueError(f"text {text[:40]!r} has no character of Reed's alphabet "
                         "(lowercase letters, digits, punctuation, space)")
    warnings = []
    if unknown:
        warnings.append(f"characters outside Reed's alphabet are left blank: {''.join(unknown)!r}"
                        + (" (it has no capitals)" if any(ch.isupper() for ch in unknown) else ""))
    if len(text) > MAX_LEN:
        warnings.append(f"text is {len(text)} characters long: the {len(text) - MAX_LEN} past "
                        f"{MAX_LEN} are dropped")
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
        x_gates, x_cand = xp[..., :2 * self.hidden], xp[..., 2 * self.hidden:]
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

    def __init__(self, c1: int = 384, c2: int = 512, c3: int = 512, hidden: int = 512, out: int = 1024,
                 alphabet: int = 70, kernel: int = 4, pool: int = 3):
        super().__init__()
        if seq_len(MAX_LEN, kernel, pool) < 1:
            raise ValueError(f"kernel {kernel} and pool {pool} leave no step of {MAX_LEN} characters")
        self.sizes = {"c1": c1, "c2": c2, "c3": c3, "hidden": hidden, "out": out, "alphabet": alphabet,
                      "kernel": kernel, "pool": pool}
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
    codes = _codes(texts)
    parts = [model(_one_hot(codes[i:i + batch_size].to(device))).cpu() for i in range(0, len(texts), batch_size)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, model.sizes["out"]), np.float32)


# --- Reed's .t7 ------------------------------------------------------------------------------------
# torchfile gives Lua tables as dicts (or lists), torch objects as TorchObject, tensors as numpy
# arrays, Lua functions as LuaFunction.  Module layout accepted (after skipping Identity, SplitTable
# and Dropout, which are no-ops at inference): TemporalConvolution, Threshold/ReLU, TemporalMaxPooling,
# the same again, TemporalConvolution, Threshold/ReLU, FixedGRU (an nn.gModule), Linear -- inside an
# nn.Sequential or Reed's own nn.gModule (HybridCNNLong).

_MODULE_PREFIXES = ("nn.", "nngraph.", "graph.", "cudnn.")
_SKIPPED = {"nn.Identity", "nn.SplitTable", "nn.Dropout"}
_RELU = {"nn.Threshold", "nn.ReLU"}
_LAYOUT = ("conv", "relu", "pool", "conv", "relu", "pool", "conv", "relu", "gru", "linear")
_ROLES = ("x_update", "x_reset", "x_cand", "h_update", "h_reset", "h_cand")


class _NotReed(Exception):
    """Why a readable .t7 is not Reed's encoder (``import_reed_t7`` prefixes the file name)."""


def _get(obj, key: str):
    """Field ``key`` of a torchfile table or torch object (keys are bytes by default), else None."""
    table = obj._obj if isinstance(obj, torchfile.TorchObject) else obj
    if not isinstance(table, dict):
        return None
    return table.get(key.encode(), table.get(key))


def _typename(obj) -> str | None:
    if not isinstance(obj, torchfile.TorchObject):
        return None
    name = obj.torch_typename()
    return name.decode(errors="replace") if isinstance(name, bytes) else str(name)


def _items(table) -> list:
    """The array part of a Lua table (a list, or the keys 1..n of a table that also has other keys)."""
    if isinstance(table, list):
        return table
    if not isinstance(table, dict):
        return []
    n = 0
    while n + 1 in table:
        n += 1
    return [table[i] for i in range(1, n + 1)]


def _find_encoder(obj):
    """The encoder module: ``protos.enc_doc`` of a training checkpoint, or the file's own module."""
    if _typename(obj) is None:
        enc = _get(_get(obj, "protos"), "enc_doc")
        if enc is None:
            raise _NotReed("neither a training checkpoint with protos.enc_doc nor an encoder module")
        obj = enc
    if _typename(obj) not in ("nn.Sequential", "nn.gModule"):
        raise _NotReed(f"the encoder is a {_typename(obj) or type(obj).__name__}, "
                       "not an nn.Sequential or nn.gModule")
    return obj


def _check_data_only(root) -> None:
    """Refuse Lua functions and torch objects other than modules and graph nodes anywhere under ``root``."""
    seen, stack = set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (type(None), bool, int, float, bytes, str, np.ndarray)):
            continue
        seen.add(id(obj))
        if isinstance(obj, torchfile.LuaFunction):
            raise _NotReed("holds a Lua function (code), not only data")
        name = _typename(obj)
        if name is not None:
            if not name.startswith(_MODULE_PREFIXES):
                raise _NotReed(f"holds a torch object of class {name!r}, not a module or tensor")
            stack.append(obj._obj)
        elif isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list):
            stack.extend(obj)
        else:
            raise _NotReed(f"holds a {type(obj).__name__}, not only tables and tensors")


def _nodes(g) -> list:
    return _items(_get(g, "forwardnodes"))


def _children(node) -> list:
    return _items(_get(node, "children"))


def _module(node):
    return _get(_get(node, "data"), "module")


def _is_fixed_gru(module) -> bool:
    return _typename(module) == "nn.gModule" and any(
        _typename(_module(n)) == "nn.Sigmoid" for n in _nodes(module))


def _layers(module) -> list:
    """The leaf modules of the encoder in order (a FixedGRU counts as one)."""
    name = _typename(module)
    if name == "nn.Sequential":
        return [leaf for m in _items(_get(module, "modules")) for leaf in _layers(m)]
    if name == "nn.gModule" and not _is_fixed_gru(module):
        # Reed's HybridCNNLong is a chain, so its topologically sorted nodes are in chain order.
        return [leaf for n in _nodes(module) if _module(n) is not None for leaf in _layers(_module(n))]
    return [module]


def _kind(module) -> str:
    name = _typename(module)
    if name == "nn.TemporalConvolution":
        return "conv"
    if name in _RELU:
        threshold, val = _get(module, "threshold") or 0, _get(module, "val") or 0
        return "relu" if 0 <= threshold <= 1e-6 and val == 0 else f"{name}({threshold}, {val})"
    if name == "nn.TemporalMaxPooling":
        return "pool"
    if name == "nn.Linear":
        return "linear"
    if _is_fixed_gru(module):
        return "gru"
    return name or type(module).__name__


def _array(module, key: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    value = _get(module, key)
    if not isinstance(value, np.ndarray) or value.shape != shape:
        got = value.shape if isinstance(value, np.ndarray) else type(value).__name__
        raise _NotReed(f"{what} {key} has shape {got}, expected {shape}")
    return np.array(value, dtype=np.float32)


def _linear_arrays(linear, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Weight ``(out, in)`` and bias ``(out,)`` of an nn.Linear, as float32."""
    w = _get(linear, "weight")
    if not isinstance(w, np.ndarray) or w.ndim != 2:
        raise _NotReed(f"{what} weight is {getattr(w, 'shape', type(w).__name__)}, not a matrix")
    return np.array(w, dtype=np.float32), _array(linear, "bias", (w.shape[0],), what)


def _linear_of(module):
    """The nn.Linear of a FixedGRU node: the module itself or the one inside its nn.Sequential."""
    if _typename(module) == "nn.Sequential":
        inner = _items(_get(module, "modules"))
        return inner[0] if len(inner) == 1 and _typename(inner[0]) == "nn.Linear" else None
    return module if _typename(module) == "nn.Linear" else None


def _gru_roles(gru) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], int]:
    """Reed's six FixedGRU Linears by role, and the number of steps.

    No list order is relied on: each Linear's role comes from the graph's edges.  A Linear feeding a
    Tanh directly is the candidate's input map at step 1; one feeding a CAddTable that feeds a Tanh is
    the candidate's recurrent map when its input is a CMulTable (r ⊙ h), else its input map; one
    feeding a CAddTable that feeds a Sigmoid belongs to the update gate when that Sigmoid also feeds
    a MulConstant (the ``1 - z`` branch), else to the reset gate, and is an input map when fed by an
    input node (Identity), else a recurrent one.  All steps' Linears of a role must be equal (shared).
    """
    nodes = _nodes(gru)
    parents: dict[int, list] = {}
    for n in nodes:
        for c in _children(n):
            parents.setdefault(id(c), []).append(n)

    def kind(node) -> str | None:
        return _typename(_module(node))

    def only(found: list, what: str):
        if len(found) != 1:
            raise _NotReed(f"FixedGRU graph: {what} has {len(found)} links, expected 1")
        return found[0]

    found: dict[str, list] = {role: [] for role in _ROLES}
    for node in nodes:
        linear = _linear_of(_module(node))
        if linear is None:
            continue
        after = only(_children(node), "a Linear's output")
        before = kind(only(parents.get(id(node), []), "a Linear's input"))
        if kind(after) == "nn.Tanh":
            role = "x_cand"
        elif kind(after) == "nn.CAddTable":
            act = only(_children(after), "a gate sum")
            if kind(act) == "nn.Tanh":
                role = "h_cand" if before == "nn.CMulTable" else "x_cand"
            elif kind(act) == "nn.Sigmoid":
                gate = "update" if any(kind(c) == "nn.MulConstant" for c in _children(act)) else "reset"
                role = ("x_" if before == "nn.Identity" else "h_") + gate
            else:
                raise _NotReed(f"FixedGRU graph: a Linear's sum feeds {kind(act)}, not Tanh or Sigmoid")
        else:
            raise _NotReed(f"FixedGRU graph: a Linear feeds {kind(after)}, not Tanh or CAddTable")
        found[role].append(linear)
    steps = len(found["x_cand"])
    counts = {role: len(v) for role, v in found.items()}
    if steps < 2 or any(n != steps - 1 for role, n in counts.items() if role != "x_cand"):
        raise _NotReed(f"FixedGRU graph: Linears per role {counts} do not make a GRU of {steps} steps")
    if not any(_typename(_module(n)) == "nn.MulConstant"
               and abs((_get(_module(n), "constant_scalar") or 0) - 1 / steps) < 1e-6 for n in nodes):
        raise _NotReed("FixedGRU returns its last hidden state, not the mean of all of them (avg=1)")
    roles = {}
    for role, linears in found.items():
        roles[role] = _linear_arrays(linears[0], f"FixedGRU {role} Linear")
        for other in linears[1:]:
            if not all(np.array_equal(a, b) for a, b in zip(_linear_arrays(other, role), roles[role])):
                raise _NotReed(f"FixedGRU {role} Linears differ between steps (Reed's are shared)")
    return roles, steps


def _reed_state(encoder) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    layers = [m for m in _layers(encoder) if _typename(m) not in _SKIPPED]
    kinds = tuple(_kind(m) for m in layers)
    if kinds != _LAYOUT:
        raise _NotReed(f"another architecture: layers {', '.join(kinds)}; expected Reed's {', '.join(_LAYOUT)}")
    convs, pools, gru, linear = layers[0:7:3], layers[2:6:3], layers[8], layers[9]
    kernel = _get(convs[0], "kW")
    pool = _get(pools[0], "kW")
    state, widths = {}, []
    width_in = len(ALPHABET)
    for i, conv in enumerate(convs, 1):
        out = _get(conv, "outputFrameSize")
        if (_get(conv, "inputFrameSize"), _get(conv, "kW"), _get(conv, "dW")) != (width_in, kernel, 1):
            raise _NotReed(f"TemporalConvolution {i} is {_get(conv, 'inputFrameSize')}->{out}, kernel "
                           f"{_get(conv, 'kW')}, stride {_get(conv, 'dW')}; expected {width_in} inputs, "
                           f"kernel {kernel}, stride 1")
        w = _array(conv, "weight", (out, kernel * width_in), f"TemporalConvolution {i}")
        # Torch7 stores (out, k*in) frame-major: (out, k, in) -> PyTorch's (out, in, k).
        state[f"conv{i}.weight"] = torch.from_numpy(w.reshape(out, kernel, width_in).transpose(0, 2, 1).copy())
        state[f"conv{i}.bias"] = torch.from_numpy(_array(conv, "bias", (out,), f"TemporalConvolution {i}"))
        widths.append(out)
        width_in = out
    for i, p in enumerate(pools, 1):
        if (_get(p, "kW"), _get(p, "dW")) != (pool, pool):
            raise _NotReed(f"TemporalMaxPooling {i} is {_get(p, 'kW')}/{_get(p, 'dW')}, expected {pool}/{pool}")
    roles, steps = _gru_roles(gru)
    hidden = roles["h_cand"][0].shape[0]
    for role, (w, _) in roles.items():
        want = (hidden, hidden if role.startswith("h_") else widths[2])
        if w.shape != want:
            raise _NotReed(f"FixedGRU {role} Linear weight has shape {w.shape}, expected {want}")
    if steps != seq_len(MAX_LEN, kernel, pool):
        raise _NotReed(f"FixedGRU runs {steps} steps, the convolutions give {seq_len(MAX_LEN, kernel, pool)}")
    cat = lambda names, i: torch.from_numpy(np.concatenate([roles[n][i] for n in names]))
    state.update({"gru.x_proj.weight": cat(_ROLES[:3], 0), "gru.x_proj.bias": cat(_ROLES[:3], 1),
                  "gru.h_gates.weight": cat(_ROLES[3:5], 0), "gru.h_gates.bias": cat(_ROLES[3:5], 1),
                  "gru.h_cand.weight": cat(_ROLES[5:], 0), "gru.h_cand.bias": cat(_ROLES[5:], 1)})
    w, b = _linear_arrays(linear, "the last Linear")
    if w.shape[1] != hidden:
        raise _NotReed(f"the last Linear takes {w.shape[1]} inputs, the FixedGRU gives {hidden}")
    out = w.shape[0]
    state["out.weight"], state["out.bias"] = torch.from_numpy(w), torch.from_numpy(b)
    sizes = {"c1": widths[0], "c2": widths[1], "c3": widths[2], "hidden": hidden, "out": out,
             "alphabet": len(ALPHABET), "kernel": kernel, "pool": pool}
    return state, sizes


def import_reed_t7(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Reed's char-CNN-RNN weights from his ``.t7`` as a ``CharCNNRNN`` state dict, and its sizes.

    ``EncoderImportError`` naming the file when it is not a readable Torch7 file, when its encoder
    holds a Lua function or a torch object that is not a module, or is another architecture, or has
    arrays of the wrong shapes.  The FixedGRU's Linears are mapped by their place in its graph
    (``_gru_roles``), not by the order they are listed in.
    """
    path = Path(path)
    if not path.is_file():
        raise EncoderImportError(f"{path}: file not found")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20_000))  # torchfile recurses once per nested graph node
    try:
        obj = torchfile.load(str(path))
    except Exception as exc:  # noqa: BLE001 - any failure means not a Torch7 file
        raise EncoderImportError(f"{path}: not a readable Torch7 file ({_why(exc)})") from exc
    finally:
        sys.setrecursionlimit(limit)
    try:
        encoder = _find_encoder(obj)
        _check_data_only(encoder)
        state, sizes = _reed_state(encoder)
        CharCNNRNN(**sizes).load_state_dict(state)
    except _NotReed as exc:
        raise EncoderImportError(f"{path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - malformed fields
        raise EncoderImportError(f"{path}: not Reed's char-CNN-RNN encoder ({_why(exc)})") from exc
    return state, sizes


def _why(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- weights-only files ----------------------------------------------------------------------------

def save_encoder(path: str | Path, state_dict: Mapping[str, torch.Tensor], sizes: Mapping[str, int],
                 meta: dict) -> Path:
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
        raise EncoderImportError(f"{path}: not a loadable gancls text encoder ({_why(exc)})") from exc
    return model.to(device).eval()


# --- fitting to a dataset's own embeddings ---------------------------------------------------------

def _losses(pred: torch.Tensor, target: torch.Tensor, group: torch.Tensor,
            temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``1 - cos`` to the own target, and InfoNCE over cos / temperature against the batch's
    other targets (other captions of the same image are left out of the negatives)."""
    p, t = F.normalize(pred, dim=1), F.normalize(target, dim=1)
    sim = p @ t.T
    cosine = 1 - sim.diagonal().mean()
    same = group[:, None] == group[None, :]
    same.fill_diagonal_(False)
    logits = (sim / temperature).masked_fill(same, float("-inf"))
    return cosine, F.cross_entropy(logits, torch.arange(len(p), device=p.device))


def fit_encoder(texts: list[str], targets: np.ndarray, groups: np.ndarray,
                sizes: Mapping[str, int] = NARROW_SIZES, epochs: int = 10, batch_size: int = 64,
                lr: float = 5e-3, seed: int = 0, device: str = "auto", contrastive_weight: float = 0.1,
                temperature: float = 0.05,
                log: Callable[[str], None] = print) -> tuple[CharCNNRNN, list[dict]]:
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
        raise ValueError(f"fit_encoder: {len(texts)} texts, targets {targets.shape}, groups {groups.shape}: "
                         "expected N texts, N x D targets and N groups")
    if sizes.get("out", targets.shape[1]) != targets.shape[1]:
        raise ValueError(f"fit_encoder: sizes out {sizes['out']} but targets are {targets.shape[1]}-d")
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = CharCNNRNN(**{**sizes, "out": targets.shape[1]}).to(device)
    codes = _codes(texts).to(device)
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
            cosine, contrastive = _losses(model(_one_hot(codes[idx])), target_t[idx], group_t[idx], temperature)
            loss = cosine + contrastive_weight * contrastive
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            sums += torch.stack([loss, cosine, contrastive]).detach().cpu() * len(idx)
        loss, cosine, contrastive = (sums / len(texts)).tolist()
        row = {"epoch": epoch, "loss": loss, "cosine_loss": cosine, "contrastive": contrastive,
               "seconds": time.perf_counter() - start}
        history.append(row)
        log(f"text encoder epoch {epoch}/{epochs}: loss {loss:.4f} (1-cos {cosine:.4f}, "
            f"contrastive {contrastive:.3f}) {row['seconds']:.1f}s")
    some = torch.arange(0, len(texts), max(1, len(texts) // 2048))  # enough captions for a mean norm
    pred = torch.from_numpy(encode(model, [texts[i] for i in some])).to(device)
    scale = float(target_t[some.to(device)].norm(dim=1).mean() / pred.norm(dim=1).mean().clamp_min(1e-12))
    with torch.no_grad():
        model.out.weight.mul_(scale)
        model.out.bias.mul_(scale)
    return model.eval(), history


def score_encoder(model: CharCNNRNN, texts: list[str], targets: np.ndarray, groups: np.ndarray,
                  batch_size: int = 256) -> dict[str, float]:
    """``test_cosine``: mean cosine of each encoded caption to its stored embedding; ``test_top1``: share
    of captions whose nearest stored embedding (cosine, among all of ``targets``) is of the same group."""
    pred = F.normalize(torch.from_numpy(encode(model, texts, batch_size)), dim=1)
    tgt = F.normalize(torch.from_numpy(np.asarray(targets, dtype=np.float32)), dim=1)
    groups_t = torch.from_numpy(np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1))
    hits = torch.cat([groups_t[(pred[i:i + 4096] @ tgt.T).argmax(dim=1)] == groups_t[i:i + 4096]
                      for i in range(0, len(pred), 4096)])
    return {"test_cosine": float((pred * tgt).sum(dim=1).mean()), "test_top1": float(hits.float().mean())}
