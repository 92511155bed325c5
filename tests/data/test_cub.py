import os
import pickle

import numpy as np
import pytest

from gancls.data.cub import LayoutError
from gancls.data.layouts import safe_pickle_load
from gancls.data.raw import load_index


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_safe_pickle_loads_arrays_lists_and_refuses_code(tmp_path):
    good = tmp_path / "good.pickle"
    arr = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    good.write_bytes(pickle.dumps({"a": arr, "b": ["x", 1]}, protocol=2))
    out = safe_pickle_load(good)
    assert np.array_equal(out["a"], arr) and out["b"] == ["x", 1]
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(LayoutError, match="evil.pickle.*refusing"):
        safe_pickle_load(evil)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(LayoutError, match="images.txt: file not found"):
        load_index(tmp_path)


def test_malformed_line_names_file_and_line(tmp_path):
    cub = tmp_path / "CUB_200_2011"
    cub.mkdir()
    (cub / "images.txt").write_text("1 a/b.jpg\n2\n")
    with pytest.raises(LayoutError, match=r"images.txt:2: expected 2 fields"):
        load_index(tmp_path)
