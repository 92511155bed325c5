"""No data, model or checkpoint file runs code when loaded; extraction stays in its folder; nothing listens
beyond the loopback.  (A secret of the environment in logs, metrics and Prefect artifacts:
tests/reliability/test_kill.py::test_no_secret_in_logs_metrics_or_prefect_artifacts.  Archive members that
leave the target by "..", absolute names, symlinks and zip paths: tests/data/test_fetch.py.)"""

import builtins
import pickle
import re
import tarfile

import pytest
import torch
import yaml

from gancls.cli import main
from gancls.data import layouts
from gancls.data.fetch import FetchError, safe_extract
from gancls.data.synthetic import make_sample
from gancls.models.generator_file import CheckpointError, load_generator
from gancls.training.checkpoint import load_checkpoint

from conftest import ROOT, TINY, merge, section


class Payload:
    """Unpickling this calls open(marker, "w"): the marker file appears if any code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


def test_stackgan_pickle_with_code_is_refused_through_the_cli(tmp_path, monkeypatch, capsys):
    raw = make_sample(section("sample", **TINY["sample"]), tmp_path / "raw")
    marker = tmp_path / "pwned"
    evil = raw / "train" / layouts.FILENAMES_FILE
    evil.write_bytes(pickle.dumps([Payload(marker)], protocol=2))
    params = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), TINY)
    params["data"]["raw_dir"] = str(raw)
    params["validate"]["report_dir"] = str(tmp_path / "report")
    params["prepare"].update(out=str(tmp_path / "birds.h5"), report_dir=str(tmp_path / "report2"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    for stage in ("validate", "prepare"):
        capsys.readouterr()
        assert main([stage]) == 1
        err = capsys.readouterr().err
        assert f"{evil}: cannot be unpickled safely (refusing to load global io.open)" in err, err
        assert "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "birds.h5").exists()


def test_model_and_checkpoint_with_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    g, ckpt = tmp_path / "generator.pt", tmp_path / "epoch_00001.pt"
    model = section("model", ngf=8, ndf=8)
    torch.save({"generator": {}, "model": model.model_dump(), "extra": Payload(marker)}, g)
    torch.save({"format": 1, "epoch": 1, "extra": Payload(marker)}, ckpt)
    with pytest.raises(CheckpointError, match=r"generator\.pt: not a loadable gancls generator \(Unpickling"):
        load_generator(g)
    with pytest.raises(CheckpointError, match=r"epoch_00001\.pt: not a loadable gancls training checkpoint"):
        load_checkpoint(ckpt)
    assert not marker.exists()
    torch.load(g, weights_only=False)  # the control: loading it unrestricted does run the payload
    assert marker.exists()


def _calls(text: str, name: str) -> list[str]:
    """Every ``name(...)`` call in ``text`` with its arguments (parentheses balanced)."""
    out = []
    for m in re.finditer(re.escape(name) + r"\(", text):
        depth, i = 1, m.end()
        while depth and i < len(text):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.start() : i])
    return out


def test_source_loads_only_safely():
    sources = {p: p.read_text() for d in ("src", "flows", "benchmarks") for p in (ROOT / d).rglob("*.py")}
    assert len(sources) > 15
    loads = [(p, c) for p, t in sources.items() for c in _calls(t, "torch.load")]
    assert len(loads) >= 3
    assert [(str(p), c) for p, c in loads if "weights_only=True" not in c] == []
    unpicklers = [
        (str(p.relative_to(ROOT)), m.group())
        for p, t in sources.items()
        for m in re.finditer(
            r"\bpickle\.(loads?|Unpickler)\b|\bjoblib\.load\b|allow_pickle=True|"
            r"\byaml\.load\(|\byaml\.(unsafe_)?load\b|(?<![.\w])(eval|exec)\(",
            t,
        )
    ]
    # the one unpickler: layouts._SafeUnpickler (numpy arrays and plain types only)
    assert unpicklers == [("src/gancls/data/layouts.py", "pickle.Unpickler")], unpicklers


def test_extraction_refuses_hard_links_and_absolute_symlinks_out_of_the_target(tmp_path):
    """What tests/data/test_fetch.py does not cover: hard links, and symlinks with an absolute target."""
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    for kind in ("hardlink", "abs-symlink"):
        archive = tmp_path / f"{kind}.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("data/link")
            info.type = tarfile.LNKTYPE if kind == "hardlink" else tarfile.SYMTYPE
            info.linkname = "../../outside.txt" if kind == "hardlink" else str(secret)
            tar.addfile(info)
        target = tmp_path / f"t-{kind}"
        with pytest.raises(FetchError, match="refusing to extract member"):
            safe_extract(archive, target)
        assert not (target / "data/link").exists() and not (target / "data/link").is_symlink()
    assert secret.read_text() == "not yours"


def test_nothing_binds_beyond_the_loopback(monkeypatch, tmp_path):
    """The project starts two servers: `make serve`'s Prefect server (gancls serve: src/gancls/runs/serve.py), on
    ``serve.host`` of params.yaml, and the demo page (gancls demo: src/gancls/drawing/demo.py, tests/drawing/test_demo.py
    drives it), on ``demo.host``, both 127.0.0.1 by default; nothing in src/, flows/, the Makefile or dvc.yaml
    binds 0.0.0.0, and a Prefect server started for the flow listens on 127.0.0.1 unless told otherwise."""
    from gancls.config import load_params
    from gancls.runs import serve

    files = [
        *(ROOT / "src").rglob("*.py"),
        *(ROOT / "flows").rglob("*.py"),
        ROOT / "Makefile",
        ROOT / "dvc.yaml",
        *(ROOT / "tests").rglob("*.py"),
    ]
    wide = [
        str(p)
        for p in files
        if re.search(r"0\.0\.0\.0|host\s*=\s*['\"]{2}|['\"]::['\"]", p.read_text()) and p.name != "test_security.py"
    ]
    assert wide == []
    servers = [
        str(p)
        for p in files
        if re.search(r"\.bind\(|\bserve\(|server_name=|HTTPServer|uvicorn", p.read_text()) and "tests" not in p.parts
    ]
    # update this test when another server is added
    assert sorted(servers) == [str(ROOT / "src" / "gancls" / name) for name in ("drawing/demo.py", "runs/serve.py")]
    assert load_params(ROOT / "params.yaml").demo.host == "127.0.0.1"
    # what `gancls serve` starts, without starting it: the server command gets serve.host of params.yaml
    started = []

    class Server:
        pid = -1

        def __init__(self, cmd, **kwargs):
            started.append(cmd)
            raise SystemExit("not started")

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))  # serve() sets it for itself: restored after the test
    monkeypatch.setattr(serve.subprocess, "Popen", Server)
    params = load_params(ROOT / "params.yaml")
    with pytest.raises(SystemExit, match="not started"):
        serve.serve_flow(tmp_path, params.model_copy(update={"serve": params.serve.model_copy(update={"home": "h"})}))
    assert len(started) == 1 and started[0][started[0].index("--host") + 1] == params.serve.host == "127.0.0.1"
    assert not (ROOT / "h").exists() and (tmp_path / "h").is_dir()
    from prefect.settings import PREFECT_SERVER_API_HOST

    assert PREFECT_SERVER_API_HOST.value() == "127.0.0.1"
