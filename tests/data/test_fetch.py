"""`gancls fetch`: safe extraction, checksums, the offline failure, and a whole fetch from a local server."""

import hashlib
import http.server
import io
import json
import shutil
import socket
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from gancls.config import parse_params
from gancls.data.fetch import FetchError, fetch, safe_extract

from conftest import ROOT, TINY, dvc, merge, sh

# --- helpers ------------------------------------------------------------------------------------


def _tar_with(path: Path, *members: tarfile.TarInfo) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            data = b"pwned\n" if info.isfile() else None
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _fetch_params(tmp: Path, base_url: str, **fetch_over):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    over = {
        "data_dir": str(tmp / "data"),
        "download_dir": str(tmp / "downloads"),
        "checksums": str(tmp / "data.sha256.json"),
        "connect_timeout": 3,
        "retries": 0,
        "dvc_add": False,
        "cub": {"url": f"{base_url}/CUB_200_2011.tgz"},
        "embeddings": {"url": f"{base_url}/birds.zip"},
        "captions": {"url": f"{base_url}/captions.tar.gz", "file": "captions.tar.gz"},
        "text_encoder": {"url": f"{base_url}/reed.t7", "file": "reed.t7"},
    }
    raw = merge(raw, {"fetch": merge(over, fetch_over)})
    return parse_params(raw).fetch, raw


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """A tiny CUB-layout sample packed as the three archives: CUB's tgz, StackGAN's zip, Reed's captions."""
    from gancls.data.synthetic import make_sample

    root = tmp_path_factory.mktemp("archives")
    raw = merge(yaml.safe_load((ROOT / "params.yaml").read_text()), {"sample": TINY["sample"]})
    sample = make_sample(parse_params(raw).sample, root / "sample")
    served = root / "served"
    served.mkdir()
    with tarfile.open(served / "CUB_200_2011.tgz", "w:gz") as tar:
        tar.add(sample / "CUB_200_2011", "CUB_200_2011")
        tar.add(sample / "CUB_200_2011" / "classes.txt", "attributes.txt")  # a stray top-level file, as in CUB
    with zipfile.ZipFile(served / "birds.zip", "w") as zf:  # StackGAN: birds/{train,test}/ + image pickles
        for split in ("train", "test"):
            for f in sorted((sample / split).iterdir()):
                zf.write(f, f"birds/{split}/{f.name}")
            zf.writestr(f"birds/{split}/76images.pickle", b"not read by gancls")
    with tarfile.open(served / "captions.tar.gz", "w:gz") as tar:
        tar.add(sample / "text_c10", "cvpr2016_cub/text_c10")
    from reed_t7_files import bare_encoder, random_weights, write_t7

    write_t7(served / "reed.t7", bare_encoder(random_weights()))  # Reed's encoder layout, random weights
    md5 = hashlib.md5((served / "CUB_200_2011.tgz").read_bytes()).hexdigest()
    return {"sample": sample, "served": served, "cub_md5": md5}


@pytest.fixture
def server(archives):
    """An HTTP server on 127.0.0.1 serving the archives, honouring Range requests while ``ranges[0]``.

    ``requests`` lists the paths asked for, ``range_requests`` the Range headers received.
    """
    state = {"requests": [], "range_requests": [], "ranges": [True]}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state["requests"].append(self.path)
            path = archives["served"] / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            data, rng = path.read_bytes(), self.headers.get("Range")
            if rng:
                state["range_requests"].append(rng)
            if rng and state["ranges"][0]:
                start = int(rng.removeprefix("bytes=").rstrip("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                data = data[start:]
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "httpd": httpd, **state}
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- (a) safe extraction --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink", "zip-parent"])
def test_extraction_refuses_members_that_leave_the_target(tmp_path, kind):
    target, outside = tmp_path / "box" / "target", tmp_path / "box" / "evil"
    target.parent.mkdir()
    if kind == "parent":
        archive = _tar_with(tmp_path / "a.tgz", _file("ok.txt"), _file("../evil"))
    elif kind == "absolute":
        archive = _tar_with(tmp_path / "a.tgz", _file(str(outside)))
    elif kind == "symlink":
        archive = _tar_with(tmp_path / "a.tgz", _link("link", "../evil"), _file("link/pwned"))
        outside.mkdir()
    else:
        archive = tmp_path / "a.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok.txt", "fine")
            zf.writestr("../evil", "pwned")
    with pytest.raises(FetchError, match="refusing to extract member") as err:
        safe_extract(archive, target)
    assert str(archive) in str(err.value)
    if kind == "absolute":
        assert "absolute path" in str(err.value)
    if kind == "symlink":
        assert list(outside.iterdir()) == []
    else:
        assert not outside.exists()
    # nothing anywhere outside the target folder
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(
        ["target"] + (["evil"] if kind == "symlink" else [])
    )


def test_extraction_of_a_good_archive(tmp_path):
    archive = _tar_with(tmp_path / "a.tgz", _file("dir/ok.txt"), _link("dir/link", "ok.txt"))
    out = safe_extract(archive, tmp_path / "t")
    assert (out / "dir" / "ok.txt").read_text() == "pwned\n"
    with pytest.raises(FetchError, match="not a tar or zip"):
        safe_extract(tmp_path / "t" / "dir" / "ok.txt", tmp_path / "u")


# --- (b) checksums --------------------------------------------------------------------------------


def test_checksum_mismatch_is_refused_and_the_file_removed(tmp_path, archives, server):
    cfg, _ = _fetch_params(tmp_path, server["url"], cub={"md5": "0" * 32})
    with pytest.raises(FetchError, match=r"CUB_200_2011\.tgz: checksum mismatch: MD5 .* not the expected 0{32}"):
        fetch(cfg)
    downloads = tmp_path / "downloads"
    assert list(downloads.iterdir()) == []  # neither the final name nor the .download / .part file
    assert not (tmp_path / "data.sha256.json").exists()

    # a file placed by hand whose SHA-256 differs from the recorded one
    cfg, _ = _fetch_params(tmp_path, server["url"], cub={"md5": None})
    shutil.copy(archives["served"] / "CUB_200_2011.tgz", downloads)
    (tmp_path / "data.sha256.json").write_text(json.dumps({"CUB_200_2011.tgz": "ab" * 32}))
    n = len(server["requests"])
    with pytest.raises(FetchError, match="SHA-256 .* is not the recorded abab"):
        fetch(cfg)
    assert not (downloads / "CUB_200_2011.tgz").exists()
    assert len(server["requests"]) == n  # the placed file was checked, not downloaded again


@pytest.mark.parametrize("ranges", [True, False])
def test_an_interrupted_download_resumes(tmp_path, archives, server, ranges):
    """A partial file left by gdown is continued with a Range request (or, if the server ignores Range, redone)."""
    server["ranges"][0] = ranges
    cfg, _ = _fetch_params(tmp_path, server["url"], cub={"md5": archives["cub_md5"]})
    whole = (archives["served"] / "CUB_200_2011.tgz").read_bytes()
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / "CUB_200_2011.tgz.downloadAbCd1234.part").write_bytes(whole[:1000])
    from gancls.data.fetch import ensure_archive

    got = ensure_archive("cub", cfg, {}, ["cub"])
    assert got.read_bytes() == whole
    assert server["range_requests"] == ["bytes=1000-"]
    assert sorted(p.name for p in downloads.iterdir()) == ["CUB_200_2011.tgz"]


def test_reed_encoder_is_placed_checked_or_skipped(tmp_path, archives, server):
    """The .t7 is optional: placed under data/ when it is Reed's encoder, refused and removed when it is
    not, and a failed download only warns."""
    cfg, _ = _fetch_params(tmp_path, server["url"])
    for part in ("CUB_200_2011", "text_c10", "train", "test"):  # the rest already in place
        shutil.copytree(archives["sample"] / part, tmp_path / "data" / part)
    summary = fetch(cfg, "text_encoder/reed.t7")
    assert server["requests"] == ["/reed.t7"] and summary["placed"] == ["text_encoder/reed.t7"]
    assert (tmp_path / "data/text_encoder/reed.t7").read_bytes() == (archives["served"] / "reed.t7").read_bytes()
    assert "reed.t7" in json.loads((tmp_path / "data.sha256.json").read_text())

    cfg, _ = _fetch_params(tmp_path, server["url"], text_encoder={"file": "other.t7"})
    (tmp_path / "downloads/other.t7").write_bytes(b"<html>a download page</html>")
    with pytest.raises(FetchError, match=r"other\.t7: not Reed's text encoder \(not a readable Torch7 file"):
        fetch(cfg, "text_encoder/other.t7")
    assert not (tmp_path / "downloads/other.t7").exists() and not (tmp_path / "data/text_encoder/other.t7").exists()

    cfg, _ = _fetch_params(tmp_path, server["url"], text_encoder={"url": f"{server['url']}/gone.t7", "file": "gone.t7"})
    summary = fetch(cfg, "text_encoder/gone.t7")
    assert summary["skipped"] == ["text_encoder/gone.t7"] and not (tmp_path / "data/text_encoder/gone.t7").exists()


# --- (c) offline ----------------------------------------------------------------------------------


def test_offline_fetch_fails_fast_naming_the_archives(tmp_path):
    _, raw = _fetch_params(tmp_path, f"http://127.0.0.1:{_closed_port()}", retries=2, download_dir="downloads")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.monotonic()
    proc = sh(["gancls", "fetch"], tmp_path, check=False)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert elapsed < 60
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("gancls fetch: error: cannot download CUB_200_2011.tgz"), proc.stderr
    for name in ("CUB_200_2011.tgz", "birds.zip", "captions.tar.gz", "into downloads/", "Connection refused"):
        assert name in last, last
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()
    assert list((tmp_path / "downloads").iterdir()) == []


# --- (d) a whole fetch, dvc add, then validate + prepare --------------------------------------------


def test_fetch_from_a_local_server_then_validate_and_prepare(project_clone, archives, server):
    url = server["url"]
    repo = project_clone(
        {
            "data": {"raw_dir": "data"},
            "fetch": {
                "retries": 0,
                "connect_timeout": 3,
                "cub": {"url": f"{url}/CUB_200_2011.tgz", "md5": archives["cub_md5"]},
                "embeddings": {"url": f"{url}/birds.zip"},
                "captions": {"url": f"{url}/captions.tar.gz", "file": "captions.tar.gz"},
                "text_encoder": {"url": f"{url}/reed.t7", "file": "reed.t7"},
            },
        }
    )

    out = sh(["gancls", "fetch"], repo)
    assert sorted(server["requests"]) == ["/CUB_200_2011.tgz", "/birds.zip", "/captions.tar.gz", "/reed.t7"]
    summary = json.loads(out.stdout.split("data in place: ", 1)[1])
    encoder = yaml.safe_load((repo / "params.yaml").read_text())["text_encoder"]["reed_t7"]
    assert sorted(summary["placed"]) == ["CUB_200_2011", "test", "text_c10", encoder, "train"]
    data, sample = repo / "data", archives["sample"]
    assert sorted(p.name for p in data.iterdir()) == ["CUB_200_2011", "test", "text_c10", "text_encoder", "train"]
    assert (data / encoder).read_bytes() == (archives["served"] / "reed.t7").read_bytes()
    assert sorted(p.name for p in (data / "train").iterdir()) == sorted(p.name for p in (sample / "train").iterdir())
    assert (data / "CUB_200_2011" / "images.txt").read_bytes() == (sample / "CUB_200_2011" / "images.txt").read_bytes()
    assert not list(repo.glob(".data.fetch-*"))
    sums = json.loads((repo / "data.sha256.json").read_text())
    assert sums == {
        f: hashlib.sha256((archives["served"] / f).read_bytes()).hexdigest()
        for f in ("CUB_200_2011.tgz", "birds.zip", "captions.tar.gz", "reed.t7")
    }
    spec = yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]
    assert spec["path"] == "data" and spec["md5"].endswith(".dir") and spec["nfiles"] > 0
    assert "desc" in spec  # dvc add kept the project's description

    # again: everything in place, nothing downloaded; one part gone: rebuilt from the kept archive, offline
    sh(["gancls", "fetch"], repo)
    assert len(server["requests"]) == 4
    shutil.rmtree(data / "text_c10")
    server["httpd"].shutdown()
    again = sh(["gancls", "fetch"], repo)
    assert json.loads(again.stdout.split("data in place: ", 1)[1])["placed"] == ["text_c10"]
    assert yaml.safe_load((repo / "data.dvc").read_text())["outs"][0]["md5"] == spec["md5"]

    dvc("repro", "validate", "prepare", cwd=repo)
    assert (repo / "build" / "prepared" / "birds.h5").stat().st_size > 0
    assert json.loads((repo / "reports" / "validation" / "result.json").read_text())
