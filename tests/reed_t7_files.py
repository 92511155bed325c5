"""Reed's ``.t7`` files written by a minimal Torch7 binary writer, in his module layout (``HybridCNNLong``
+ the nngraph ``FixedGRU``) with random weights: for the encoder import tests (tests/models) and the
stages that read such a file (fetch, train-text-encoder, sample)."""

import io
import itertools
import struct

import numpy as np

# --- a minimal Torch7 writer -----------------------------------------------------------------------


class Obj:
    """A Torch7 class instance: torch class name and its fields (a Lua table)."""

    def __init__(self, cls: str, **fields):
        self.cls, self.fields = cls, fields


class LuaFunction:
    def __init__(self, code: bytes):
        self.code = code


def t7_bytes(root) -> bytes:
    """torch.save's binary format (64-bit Linux): int32 tags, int64 sizes, float64 numbers; an object
    written twice becomes a reference to the first."""
    out, refs = io.BytesIO(), {}
    i32 = lambda v: out.write(struct.pack("<i", v))
    i64 = lambda v: out.write(struct.pack("<q", v))
    raw = lambda s: (i32(len(s)), out.write(s))

    def ref(obj) -> bool:
        known = id(obj) in refs
        refs.setdefault(id(obj), len(refs) + 1)
        i32(refs[id(obj)])
        return known

    def write(v):
        if v is None:
            i32(0)
        elif isinstance(v, bool):
            i32(5), i32(int(v))
        elif isinstance(v, (int, float)):
            i32(1), out.write(struct.pack("<d", v))
        elif isinstance(v, str):
            i32(2), raw(v.encode())
        elif isinstance(v, LuaFunction):
            i32(6)
            if not ref(v):
                raw(v.code), write(None)
        elif isinstance(v, np.ndarray):
            i32(4)
            if not ref(v):
                a = np.ascontiguousarray(v, dtype=np.float32)
                raw(b"V 1"), raw(b"torch.FloatTensor"), i32(a.ndim)
                [i64(n) for n in a.shape], [i64(s // 4) for s in a.strides], i64(1)
                storage = refs.setdefault(("storage", id(v)), len(refs) + 1)
                i32(4), i32(storage), raw(b"V 1"), raw(b"torch.FloatStorage"), i64(a.size), out.write(a.tobytes())
        elif isinstance(v, Obj):
            i32(4)
            if not ref(v):
                raw(b"V 1"), raw(v.cls.encode()), write(v.fields)
        elif isinstance(v, (dict, list)):
            i32(3)
            if not ref(v):
                items = list(v.items() if isinstance(v, dict) else enumerate(v, 1))
                i32(len(items))
                for k, x in items:
                    write(k), write(x)
        else:
            raise TypeError(type(v))

    write(root)
    return out.getvalue()


# --- Reed's encoder in his module layout -----------------------------------------------------------

ROLES = ("x_update", "x_reset", "x_cand", "h_update", "h_reset", "h_cand")
WIDTHS = {"c1": 7, "c2": 6, "c3": 5, "hidden": 5, "out": 3}  # c3 = hidden: six same-shaped GRU matrices


def random_weights(seed=0, out=WIDTHS["out"]) -> dict:
    rng = np.random.default_rng(seed)
    u = lambda *shape: rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    w, h = {**WIDTHS, "out": out}, WIDTHS["hidden"]
    return {
        "conv": [
            (u(w["c1"], 4 * 70), u(w["c1"])),
            (u(w["c2"], 4 * w["c1"]), u(w["c2"])),
            (u(w["c3"], 4 * w["c2"]), u(w["c3"])),
        ],
        **{role: (u(h, h), u(h)) for role in ROLES},
        "linear": (u(w["out"], h), u(w["out"])),
    }


def fixed_gru(weights: dict, steps: int = 18, avg: bool = True, shuffle: bool = False) -> Obj:
    """Reed's FixedGRU.rnn(steps, avg) as an nngraph gModule: forward nodes with their modules and
    children; every step's Linear of a role holds the same arrays (Reed shares them)."""
    nodes = []

    def node(module, *inputs):
        n = Obj("nngraph.Node", data={} if module is None else {"module": module}, children={}, id=len(nodes) + 1)
        for p in inputs:  # graph.Node:add keeps children in the array part and child -> index in the hash part
            kids = p.fields["children"]
            kids[len(kids) // 2 + 1] = n
            kids[n] = len(kids) // 2 + 1
        nodes.append(n)
        return n

    def linear(role):
        return Obj("nn.Sequential", modules=[Obj("nn.Linear", weight=weights[role][0], bias=weights[role][1])])

    def m(cls, **fields):
        return Obj(cls, **fields)

    innode = node(None)
    xs = [node(m("nn.Identity"), innode) for _ in range(steps)]
    hids = [node(m("nn.Tanh"), node(linear("x_cand"), xs[0]))]
    for x in xs[1:]:
        h = hids[-1]
        z = node(m("nn.Sigmoid"), node(m("nn.CAddTable"), node(linear("x_update"), x), node(linear("h_update"), h)))
        r = node(m("nn.Sigmoid"), node(m("nn.CAddTable"), node(linear("x_reset"), x), node(linear("h_reset"), h)))
        gated = node(m("nn.CMulTable"), r, h)
        cand = node(m("nn.Tanh"), node(m("nn.CAddTable"), node(linear("x_cand"), x), node(linear("h_cand"), gated)))
        one_minus_z = node(m("nn.AddConstant", constant_scalar=1), node(m("nn.MulConstant", constant_scalar=-1), z))
        hids.append(node(m("nn.CAddTable"), node(m("nn.CMulTable"), z, cand), node(m("nn.CMulTable"), one_minus_z, h)))
    if avg:
        total = hids[0]
        for h in hids[1:]:
            total = node(m("nn.CAddTable"), total, h)
        node(None, node(m("nn.MulConstant", constant_scalar=1 / steps), total))
    else:
        node(None, hids[-1])
    order = list(nodes)
    if shuffle:  # the importer must not rely on the order of the node list
        np.random.default_rng(1).shuffle(order)
    return Obj("nn.gModule", forwardnodes=order, innode=innode, outnode=nodes[-1], modules=[])


def encoder_modules(weights: dict, **gru) -> list:
    convs = [
        Obj(
            "nn.TemporalConvolution",
            inputFrameSize=w.shape[1] // 4,
            outputFrameSize=w.shape[0],
            kW=4,
            dW=1,
            weight=w,
            bias=b,
        )
        for w, b in weights["conv"]
    ]
    relu = lambda: Obj("nn.Threshold", threshold=1e-6, val=0, inplace=False)
    pool = lambda: Obj("nn.TemporalMaxPooling", kW=3, dW=3)
    return [
        convs[0],
        relu(),
        pool(),
        convs[1],
        relu(),
        pool(),
        convs[2],
        relu(),
        Obj("nn.SplitTable", dimension=2),
        fixed_gru(weights, **gru),
        Obj("nn.Dropout", p=0.0),
        Obj("nn.Linear", weight=weights["linear"][0], bias=weights["linear"][1]),
    ]


def bare_encoder(weights: dict, **gru) -> Obj:
    return Obj("nn.Sequential", modules=encoder_modules(weights, **gru))


def reed_checkpoint(weights: dict) -> dict:
    """A training checkpoint: protos.enc_doc is Reed's HybridCNNLong gModule (a chain of nodes)."""
    mods = encoder_modules(weights)
    chain = [None, Obj("nn.Identity"), Obj("nn.Sequential", modules=mods[:8]), *mods[8:], None]
    nodes = [Obj("nngraph.Node", data={} if mod is None else {"module": mod}, children={}) for mod in chain]
    for a, b in itertools.pairwise(nodes):
        a.fields["children"].update({1: b, b: 1})
    enc = Obj("nn.gModule", forwardnodes=nodes, innode=nodes[0], outnode=nodes[-1])
    return {
        "protos": {"enc_doc": enc, "enc_image": Obj("nn.Linear", weight=np.zeros((2, 2), np.float32))},
        "opt": {"learning_rate": 0.0007, "doc_length": 201},
    }


def write_t7(path, root):
    path.write_bytes(t7_bytes(root))
    return path
