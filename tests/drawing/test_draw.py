"""`gancls sample`: draw images for test captions that match a query, or for sentences of one's own."""

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from gancls.cli import main
from gancls.drawing.draw import NoMatch, find_captions

CAPTIONS = np.array(
    [
        ["a bird with a red body.", "this bird has red wings and a blue body."],
        ["a small bird with a Red Body, flying.", "this bird is standing."],
    ],
    dtype=object,
)
KEYS = np.array(["001.A/A_1", "002.B/B_1"], dtype=object)


def test_query_is_a_whole_word_phrase():
    assert find_captions(CAPTIONS, KEYS, "red body") == [(0, 0), (1, 0)]
    assert find_captions(CAPTIONS, KEYS, "red") == [(0, 0), (0, 1), (1, 0)]
    assert find_captions(CAPTIONS, KEYS, "re") == []
    assert find_captions(CAPTIONS, KEYS, caption_id="002.B/B_1#1") == [(1, 1)]
    assert find_captions(CAPTIONS, KEYS, caption_id="002.B/B_1") == [(1, 0), (1, 1)]
    with pytest.raises(NoMatch, match="no test image with key"):
        find_captions(CAPTIONS, KEYS, caption_id="nope")
    with pytest.raises(NoMatch, match="--query"):
        find_captions(CAPTIONS, KEYS, "  ")


def test_sample_command_writes_a_captioned_grid(learned, tmp_path, capsys):
    out = tmp_path / "red.png"
    rc = main(
        [
            "--params",
            str(learned["params_file"]),
            "sample",
            "--query",
            "red",
            "--n",
            "3",
            "--max-captions",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    assert str(out) in capsys.readouterr().out
    img = Image.open(out)
    assert img.width > 3 * 66 and img.height >= 2 * 66


def test_query_without_match_exits_nonzero(learned, tmp_path, capsys):
    out = tmp_path / "none.png"
    rc = main(["--params", str(learned["params_file"]), "sample", "--query", "polka dotted", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc != 0 and "no test caption" in err and "polka dotted" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


# --- sentences of one's own: `gancls sample --text`, `gancls import-encoder` -----------------------


@pytest.fixture
def with_encoder(learned):
    """The learned run's params: text_encoder.weights is the encoder fitted to its training captions."""
    return learned["params_file"]


def test_text_command_draws_sentences_of_ones_own(with_encoder, tmp_path, capsys):
    out, h5 = tmp_path / "mine.png", tmp_path / "mine.h5"
    long = "a small bird with a bright red body and a blue head " * 5  # 260 characters
    texts = ["this bird is yellow with black wings", long]
    rc = main(
        [
            "--params",
            str(with_encoder),
            "sample",
            "--text",
            texts[0],
            "--text",
            long,
            "--n",
            "3",
            "--out",
            str(out),
            "--h5",
            str(h5),
        ]
    )
    io = capsys.readouterr()
    assert rc == 0, io.err
    assert str(out) in io.out and f"the {len(long) - 201} past 201 are dropped" in io.err
    with h5py.File(h5) as f:
        images, written = f["images"][()], [t.decode() for t in f["texts"][()]]
    assert images.shape == (2, 3, 64, 64, 3) and images.dtype == np.uint8 and written == texts
    # the sentence decides the picture: other text, other images at the same noise
    assert np.abs(images[0].astype(int) - images[1].astype(int)).mean() > 1
    assert Image.open(out).height >= 2 * 66


def test_text_without_an_encoder_says_how_to_get_one(learned, tmp_path, capsys):
    import yaml

    raw = yaml.safe_load(learned["params_file"].read_text())
    raw["text_encoder"]["weights"] = str(tmp_path / "missing.pt")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    out = tmp_path / "none.png"
    rc = main(["--params", str(tmp_path / "params.yaml"), "sample", "--text", "a red bird", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "missing.pt" in err and "train-text-encoder" in err and "gancls import-encoder" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_typed_colour_is_drawn(learned, tmp_path):
    """Ten sentences that differ only in the body's colour word: the scorer sees the typed colour on the
    body far more often than the colour of the next sentence (a generator or encoder that ignored the
    word would score the same on both)."""
    from gancls.evaluation.scorer import load_scorer

    scorer, state = load_scorer(learned["scorer"])
    body, colours = list(state["vocab"]).index("body"), state["vocab"]["body"]
    texts = [f"this bird has a {c} body and grey wings." for c in colours]
    h5 = tmp_path / "typed.h5"
    assert (
        main(
            [
                "--params",
                str(learned["params_file"]),
                "sample",
                "--file",
                str(_lines(tmp_path, texts)),
                "--n",
                "8",
                "--out",
                str(tmp_path / "typed.png"),
                "--h5",
                str(h5),
            ]
        )
        == 0
    )
    with h5py.File(h5) as f:
        seen = np.stack([scorer.predict(images)[:, body] for images in f["images"][()]])  # [colour, image]
    typed = np.arange(len(colours))[:, None]
    own, other = (seen == typed).mean(), (seen == (typed + 1) % len(colours)).mean()
    print(f"typed colour: own {own:.3f}, next colour's {other:.3f}")
    assert own > 0.35 and own > 4 * other, (own, other, seen)


def _lines(tmp_path, texts):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(texts) + "\n")
    return path


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "empty text"),
        ("    ", "empty text: nothing to encode (only whitespace)"),
        ("ÄÖÜ", "no character of Reed's alphabet"),
    ],
)
def test_text_the_encoder_cannot_see_is_one_line(with_encoder, tmp_path, capsys, text, why):
    out = tmp_path / "none.png"
    rc = main(["--params", str(with_encoder), "sample", "--text", "a red bird", "--text", text, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and why in err and "sentence 2" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_import_encoder_command_writes_weights_or_refuses_in_one_line(learned, tmp_path, capsys):
    from gancls.models.reed_t7 import import_reed_t7
    from gancls.models.text_encoder import load_encoder

    from reed_t7_files import bare_encoder, random_weights, write_t7

    t7, out = tmp_path / "reed.t7", tmp_path / "encoder.pt"
    write_t7(t7, bare_encoder(random_weights()))
    assert main(["--params", str(learned["params_file"]), "import-encoder", str(t7), "--out", str(out)]) == 0
    state, _ = import_reed_t7(t7)
    loaded = load_encoder(out).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    bad, bad_out = tmp_path / "bad.t7", tmp_path / "bad.pt"
    bad.write_bytes(b"not torch7 at all")
    capsys.readouterr()
    assert main(["--params", str(learned["params_file"]), "import-encoder", str(bad), "--out", str(bad_out)]) == 1
    err = capsys.readouterr().err
    assert str(bad) in err and len(err.strip().splitlines()) == 1 and not bad_out.exists()


@pytest.mark.parametrize(
    "args, says",
    [
        (["--n", "0"], "--n must be a whole number from 1 to 64, not '0'"),
        (["--n", "65"], "--n must be a whole number from 1 to 64, not '65'"),
        (["--seed", "1.5"], "--seed must be a whole number from 0 to 9223372036854775807, not '1.5'"),
        (["--seed", "x"], "--seed must be a whole number from 0 to 9223372036854775807, not 'x'"),
    ],
)
def test_a_bad_count_or_seed_is_one_line(with_encoder, tmp_path, capsys, args, says):
    out = tmp_path / "none.png"
    rc = main(["--params", str(with_encoder), "sample", "--text", "a red bird", *args, "--out", str(out)])
    assert rc == 1 and capsys.readouterr().err.strip() == f"gancls sample: error: {says}"
    assert not out.exists()


def test_whole_number_takes_what_a_cli_or_a_page_sends():
    from gancls.drawing.draw import SentenceError, whole_number

    assert [whole_number(v, "--n", 1, 64) for v in (8, 8.0, "8", " 8 ", "+8")] == [8] * 5
    for bad in (0, 65, 1.5, "1.5", "abc", "", None, True, [8], float("nan")):
        with pytest.raises(SentenceError, match="--n must be a whole number from 1 to 64"):
            whole_number(bad, "--n", 1, 64)
