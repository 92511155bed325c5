"""Reed's pretrained char-CNN-RNN from his ``.t7`` (``gancls import-encoder``, ``text_encoder.source: reed``).

``import_reed_t7`` reads the file with ``torchfile``, which parses Torch7 data and runs nothing: a
training checkpoint holding ``protos.enc_doc`` (Reed's ``lm_sje_nc4_cub_hybrid_gru18_..._iter30000.t7``)
or the bare encoder.  It maps the weights into ``gancls.models.text_encoder.CharCNNRNN``; a file holding
code, another architecture or the wrong shapes is refused with one line naming it.

torchfile gives Lua tables as dicts (or lists), torch objects as TorchObject, tensors as numpy
arrays, Lua functions as LuaFunction.  Module layout accepted (after skipping Identity, SplitTable
and Dropout, which are no-ops at inference): TemporalConvolution, Threshold/ReLU, TemporalMaxPooling,
the same again, TemporalConvolution, Threshold/ReLU, FixedGRU (an nn.gModule), Linear -- inside an
nn.Sequential or Reed's own nn.gModule (HybridCNNLong).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torchfile  # parses Torch7 data only: no pickle, no code

from .text_encoder import ALPHABET, MAX_LEN, CharCNNRNN, EncoderImportError, seq_len, why

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
        raise _NotReed(f"the encoder is a {_typename(obj) or type(obj).__name__}, not an nn.Sequential or nn.gModule")
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
    return _typename(module) == "nn.gModule" and any(_typename(_module(n)) == "nn.Sigmoid" for n in _nodes(module))


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
    if not any(
        _typename(_module(n)) == "nn.MulConstant" and abs((_get(_module(n), "constant_scalar") or 0) - 1 / steps) < 1e-6
        for n in nodes
    ):
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
            raise _NotReed(
                f"TemporalConvolution {i} is {_get(conv, 'inputFrameSize')}->{out}, kernel "
                f"{_get(conv, 'kW')}, stride {_get(conv, 'dW')}; expected {width_in} inputs, "
                f"kernel {kernel}, stride 1"
            )
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
    state.update(
        {
            "gru.x_proj.weight": cat(_ROLES[:3], 0),
            "gru.x_proj.bias": cat(_ROLES[:3], 1),
            "gru.h_gates.weight": cat(_ROLES[3:5], 0),
            "gru.h_gates.bias": cat(_ROLES[3:5], 1),
            "gru.h_cand.weight": cat(_ROLES[5:], 0),
            "gru.h_cand.bias": cat(_ROLES[5:], 1),
        }
    )
    w, b = _linear_arrays(linear, "the last Linear")
    if w.shape[1] != hidden:
        raise _NotReed(f"the last Linear takes {w.shape[1]} inputs, the FixedGRU gives {hidden}")
    out = w.shape[0]
    state["out.weight"], state["out.bias"] = torch.from_numpy(w), torch.from_numpy(b)
    sizes = {
        "c1": widths[0],
        "c2": widths[1],
        "c3": widths[2],
        "hidden": hidden,
        "out": out,
        "alphabet": len(ALPHABET),
        "kernel": kernel,
        "pool": pool,
    }
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
        raise EncoderImportError(f"{path}: not a readable Torch7 file ({why(exc)})") from exc
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
        raise EncoderImportError(f"{path}: not Reed's char-CNN-RNN encoder ({why(exc)})") from exc
    return state, sizes
