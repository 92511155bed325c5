"""Reed's char-CNN-RNN text encoder (gancls.models.text_encoder, REFERENCE.md §6).

Reed's ``.t7`` files are written here with a minimal Torch7 binary writer, in his module layout
(``HybridCNNLong`` + the nngraph ``FixedGRU``) with random weights, and the imported encoder is
checked against a NumPy implementation of his equations that reads the raw Torch7 arrays.
"""

import itertools
import re
import sys

import numpy as np
import pytest
import torch

from gancls.models.reed_t7 import import_reed_t7
from gancls.models.text_encoder import (
    ALPHABET,
    MAX_LEN,
    REED_SIZES,
    CharCNNRNN,
    EncoderImportError,
    check_text,
    encode,
    encode_text,
    load_encoder,
    save_encoder,
    seq_len,
)
from gancls.training.train_text_encoder import fit_encoder, score_encoder

from reed_t7_files import ROLES, WIDTHS, LuaFunction, Obj, bare_encoder, random_weights, reed_checkpoint, write_t7

TEXTS = [
    "this bird has a red belly, black wings and a short beak.",
    "A small yellow bird -- perched on a branch!",
    "Ünknown chars; (parens) [brackets] {braces} ~`+=<>|\\/@#$%^&*_",
]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the tests' models are tiny, and the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- encoding --------------------------------------------------------------------------------------


def test_alphabet_is_reeds_and_one_based():
    assert ALPHABET == "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
    assert len(ALPHABET) == 70 and ALPHABET.count("-") == 2
    x = encode_text(["a", "-", " ", "{"])
    assert x.shape == (4, MAX_LEN, 70) and x.dtype == torch.float32
    assert x[0, 0, 0] == 1 and x[1, 0, 59] == 1 and x[2, 0, 69] == 1 and x[3, 0, 67] == 1
    assert x[:, 0].sum(1).tolist() == [1, 1, 1, 1] and x[:, 1:].sum() == 0  # padding: zero columns
    assert encode_text([ALPHABET])[0, :, 36].sum() == 0  # the first '-' (code 37) is never set


def test_no_lowercasing_and_unknown_characters_are_blank():
    x = encode_text(["Ab\u00e9c"])[0]
    assert x[0].sum() == 0 and x[2].sum() == 0  # 'A' and 'é' are not in the alphabet
    assert x[1, 1] == 1 and x[3, 2] == 1  # 'b', 'c' keep their places
    assert check_text("Ab\u00e9c") == [
        ("characters outside Reed's alphabet are left blank: 'A\u00e9' (it has no capitals)")
    ]
    assert check_text("a plain caption.") == []


def test_truncation_at_201_characters():
    text = "ab" * 125  # 250 characters
    x = encode_text([text])[0]
    assert x.sum() == MAX_LEN and x[MAX_LEN - 1, 0] == 1  # the 201st character 'a' is the last one kept
    assert check_text(text) == [f"text is 250 characters long: the 49 past {MAX_LEN} are dropped"]


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty text"),
        (" \t\n ", r"empty text: nothing to encode \(only whitespace\)"),
        ("\u00c9\u00c0\u00ce\u00d4", "no character of Reed's alphabet"),
        ("  \u65e5\u672c ", "no character of Reed's alphabet"),  # spaces alone are nothing to draw
    ],
)
def test_texts_the_encoder_cannot_see_are_refused(text, why):
    with pytest.raises(ValueError, match=why):
        check_text(text)


# --- the model -------------------------------------------------------------------------------------


def test_reed_sizes_parameter_count_and_18_steps():
    model = CharCNNRNN(**REED_SIZES)
    # conv1 70*384*4 + 384 = 107,904; conv2 384*512*4 + 512 = 786,944; conv3 512*512*4 + 512 = 1,049,088;
    # FixedGRU: six 512x512 Linears with bias, 6 * (512*512 + 512) = 1,575,936; Linear 512*1024 + 1024 = 525,312
    expected = 107_904 + 786_944 + 1_049_088 + 1_575_936 + 525_312
    assert sum(p.numel() for p in model.parameters()) == expected == 4_045_184
    seen = []
    model.gru.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    with torch.no_grad():
        assert model(encode_text(TEXTS[:2])).shape == (2, 1024)
    assert seq_len() == 18 and seen == [(2, 18, 512)]


def reference(weights: dict, texts: list[str]) -> np.ndarray:
    """Reed's encoder in NumPy (float64), straight from the Torch7 arrays and his equations."""
    code = {ch: i for i, ch in enumerate(ALPHABET)}
    outs = []
    for text in texts:
        x = np.zeros((MAX_LEN, 70))
        for t, ch in enumerate(text[:MAX_LEN]):
            if ch in code:
                x[t, code[ch]] = 1
        for i, (w, b) in enumerate(weights["conv"]):
            frames = np.stack([x[t : t + 4].reshape(-1) for t in range(len(x) - 3)])  # frame-major, as Torch7
            x = np.maximum(frames @ w.T.astype(np.float64) + b, 0)
            if i < 2:
                x = x[: len(x) // 3 * 3].reshape(len(x) // 3, 3, -1).max(1)
        lin = lambda role, v: v @ weights[role][0].T.astype(np.float64) + weights[role][1]
        sig = lambda v: 1 / (1 + np.exp(-v))
        h = np.tanh(lin("x_cand", x[0]))
        hs = [h]
        for xt in x[1:]:
            z = sig(lin("x_update", xt) + lin("h_update", h))
            r = sig(lin("x_reset", xt) + lin("h_reset", h))
            cand = np.tanh(lin("x_cand", xt) + lin("h_cand", r * h))
            h = z * cand + (1 - z) * h
            hs.append(h)
        outs.append(np.mean(hs, 0) @ weights["linear"][0].T + weights["linear"][1])
    return np.array(outs)


def forward(state, sizes, texts) -> np.ndarray:
    model = CharCNNRNN(**sizes)
    model.load_state_dict(state)
    return encode(model, texts)


def test_reed_t7_import_matches_his_equations(tmp_path):
    weights = random_weights()
    want = reference(weights, TEXTS)
    deep = write_t7(tmp_path / "deep.t7", reed_checkpoint(weights))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(300)  # below what reading the nested graph takes: import_reed_t7 raises it
    try:
        import_reed_t7(deep)
    finally:
        sys.setrecursionlimit(limit)
    for name, root in [
        ("bare.t7", bare_encoder(weights)),
        ("shuffled.t7", bare_encoder(weights, shuffle=True)),
        ("checkpoint.t7", reed_checkpoint(weights)),
    ]:
        state, sizes = import_reed_t7(write_t7(tmp_path / name, root))
        assert sizes == {**WIDTHS, "alphabet": 70, "kernel": 4, "pool": 3}
        np.testing.assert_allclose(forward(state, sizes, TEXTS), want, rtol=1e-4, atol=1e-5, err_msg=name)
    saved = save_encoder(tmp_path / "enc" / "reed.pt", state, sizes, {"source": "checkpoint.t7"})
    np.testing.assert_allclose(encode(load_encoder(saved), TEXTS), want, rtol=1e-4, atol=1e-5)
    assert torch.load(saved, weights_only=True)["meta"] == {"source": "checkpoint.t7"}


def test_swapping_any_two_gru_matrices_changes_the_output(tmp_path):
    """The check above would catch a mapping that confuses any two of the six same-shaped matrices."""
    weights = random_weights()
    want = reference(weights, TEXTS)
    for a, b in itertools.combinations(ROLES, 2):
        swapped = {**weights, a: (weights[b][0], weights[a][1]), b: (weights[a][0], weights[b][1])}
        got = forward(*import_reed_t7(write_t7(tmp_path / "swapped.t7", bare_encoder(swapped))), TEXTS)
        assert np.abs(got - want).max() > 1e-3, (a, b)


def _refused(path, why):
    with pytest.raises(EncoderImportError, match=re.escape(f"{path}: ") + why) as err:
        import_reed_t7(path)
    assert "\n" not in str(err.value)


def test_refusals_name_the_file(tmp_path):
    weights = random_weights()
    garbage = tmp_path / "garbage.t7"
    garbage.write_bytes(b"\x80\x04\x95garbage, not Torch7")
    _refused(garbage, "not a readable Torch7 file")

    with_code = bare_encoder(weights)
    with_code.fields["modules"][-1].fields["updateOutput"] = LuaFunction(b"\x1bLuaR\x00 os.execute('touch pwned')")
    _refused(write_t7(tmp_path / "code.t7", with_code), "holds a Lua function")

    alien = bare_encoder(weights)
    alien.fields["modules"][0].fields["hook"] = Obj("os.Command", cmd="rm -rf /")
    _refused(write_t7(tmp_path / "alien.t7", alien), "holds a torch object of class 'os.Command'")

    bad = random_weights()
    bad["conv"][1] = (np.zeros((6, 4 * 7 + 1), np.float32), bad["conv"][1][1])
    _refused(
        write_t7(tmp_path / "shapes.t7", bare_encoder(bad)),
        re.escape("TemporalConvolution 2 weight has shape (6, 29), expected (6, 28)"),
    )

    bad = random_weights()
    bad["h_reset"] = (np.zeros((5, 4), np.float32), bad["h_reset"][1])
    _refused(
        write_t7(tmp_path / "gru_shapes.t7", bare_encoder(bad)),
        re.escape("FixedGRU h_reset Linear weight has shape (5, 4), expected (5, 5)"),
    )

    no_gru = bare_encoder(weights)
    no_gru.fields["modules"][9] = Obj("nn.Linear", weight=np.zeros((5, 5), np.float32), bias=np.zeros(5, np.float32))
    _refused(
        write_t7(tmp_path / "cnn.t7", no_gru),
        "another architecture: layers conv, relu, pool, conv, relu, pool, conv, relu, linear, linear",
    )
    _refused(write_t7(tmp_path / "last.t7", bare_encoder(weights, avg=False)), "FixedGRU returns its last hidden")
    _refused(write_t7(tmp_path / "steps.t7", bare_encoder(weights, steps=12)), "FixedGRU runs 12 steps")
    _refused(
        write_t7(tmp_path / "table.t7", {"protos": {"enc_image": Obj("nn.Linear")}}),
        "neither a training checkpoint with protos.enc_doc",
    )
    assert not (tmp_path / "pwned").exists()


def test_load_encoder_refuses_other_files(tmp_path):
    from pathlib import PurePosixPath

    path = tmp_path / "other.pt"
    torch.save({"format": 1, "kind": "gancls.models.text_encoder", "meta": PurePosixPath("x")}, path)
    with pytest.raises(EncoderImportError, match=re.escape(f"{path}: not a loadable gancls text encoder")):
        load_encoder(path)
    with pytest.raises(TypeError):
        save_encoder(
            tmp_path / "e.pt",
            CharCNNRNN(**{**REED_SIZES, **WIDTHS}).state_dict(),
            {**REED_SIZES, **WIDTHS},
            {"when": object()},
        )
    assert not (tmp_path / "e.pt").exists()


# --- fitting ---------------------------------------------------------------------------------------


def test_fit_encoder_learns_text_not_position():
    rng = np.random.default_rng(0)
    colours = ["red", "blue", "green", "black", "white", "yellow"]
    parts = ["wings", "belly", "crown", "beak", "tail", "throat"]
    vec = {w: rng.standard_normal(32) for w in colours + parts}
    pairs = [(f"a bird with a {c} {p}.", vec[c] + vec[p]) for c in colours for p in parts]
    texts, targets = [t for t, _ in pairs], np.array([v for _, v in pairs], np.float32)
    groups = np.arange(len(texts))
    narrow = {"c1": 32, "c2": 32, "c3": 32, "hidden": 32}
    model, history = fit_encoder(
        texts,
        targets,
        groups,
        sizes=narrow,
        epochs=40,
        batch_size=12,
        lr=1e-2,
        seed=0,
        device="cpu",
        contrastive_weight=0.1,
        temperature=0.1,
        log=lambda line: None,
    )
    assert len(history) == 40 and history[-1]["loss"] < 0.5 * history[0]["loss"]
    fitted = score_encoder(model, texts, targets, groups)
    shuffled = score_encoder(model, list(np.random.default_rng(1).permutation(texts)), targets, groups)
    assert fitted["test_cosine"] > shuffled["test_cosine"] + 0.3 and fitted["test_top1"] > 0.5 > shuffled["test_top1"]
    norms = np.linalg.norm(encode(model, texts), axis=1)
    assert abs(norms.mean() / np.linalg.norm(targets, axis=1).mean() - 1) < 1e-3  # the GAN's input scale
