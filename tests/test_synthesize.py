"""`gancls sample`: draw images for test captions that match a query."""
import numpy as np
import pytest
from PIL import Image

from gancls.cli import main
from gancls.synthesize import NoMatch, find_captions

CAPTIONS = np.array([["a bird with a red body.", "this bird has red wings and a blue body."],
                     ["a small bird with a Red Body, flying.", "this bird is standing."]], dtype=object)
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
    rc = main(["--params", str(learned["params_file"]), "sample", "--query", "red", "--n", "3",
               "--max-captions", "2", "--out", str(out)])
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
