"""``gancls fetch``: download, check and unpack CUB-200-2011 and Reed's data into ``fetch.data_dir``.

What it does, in order (settings: the ``fetch:`` section of params.yaml, ``FetchParams``):

1. Looks at ``data_dir`` (default ``data/``): each part of the layout that ``gancls.data.raw`` reads —
   ``CUB_200_2011/``, ``text_c10/``, ``train/`` + ``test/`` — that is already there and complete
   is kept as it is, and its archive is not needed.
2. For each missing part, takes its archive from ``download_dir`` (default ``build/downloads/``):
   a file a user put there by hand is used as it is; otherwise it is downloaded with gdown
   (``gdown.download``, which handles Google Drive links — the StackGAN embeddings and Reed's
   captions — and plain HTTP(S) — CUB from Caltech — alike). gdown shows a progress bar, gives up
   on a server that does not answer within ``connect_timeout`` seconds, retries ``retries`` times
   and writes into ``<name>.download<random>.part`` before it renames the file.  **Resume**: with
   ``resume=True`` gdown continues such a ``.part`` file left by an interrupted download with an
   HTTP Range request (for plain HTTP servers that honour Range, and for Drive), instead of
   starting over; a finished but unchecked ``<name>.download`` is checked without downloading.
   (torchvision's ``download_url`` writes straight to the final name, cannot resume and has no
   timeout, so it is not used.)
3. Checks every archive: CUB's MD5 (``cub.md5``, from Caltech), and the SHA-256 of every archive
   against ``checksums`` (default ``data.sha256.json``, meant to be committed): recorded the first
   time an archive is seen, verified every time after.  An archive that fails a check is removed
   and the fetch stops.  Only a checked archive gets its final name, so an interrupted fetch never
   leaves a half-written or unchecked file under it.
4. Unpacks each archive into a temporary folder beside ``data_dir`` — tar files with tarfile's
   ``data`` filter (plus a refusal of absolute member names, which that filter would only strip),
   zip files after checking that no member leaves the folder — finds the parts in it (at any depth:
   ``birds/train``, ``cvpr2016_cub/text_c10``, ...) and moves each into ``data_dir`` with one rename.
   Of the embedding folders only the three pickles ``gancls.data.raw`` reads are kept.
5. Reed's pretrained CUB text encoder (``fetch.text_encoder``, a ``.t7``; ``null``: skipped): taken
   from ``download_dir`` or downloaded like the archives, its SHA-256 recorded or checked, read with
   ``gancls.models.reed_t7`` (a file that is not Reed's encoder is removed and refused), and copied to
   ``<data_dir>/<text_encoder.reed_t7>``, where ``text_encoder.source: reed`` reads it.  It is
   optional: a failed download is a warning naming where to put the file, not a failed fetch.
6. Runs ``python -m dvc add <data_dir>`` so that ``<data_dir>.dvc`` (``data.dvc``) holds its hash.

Offline, it stops within seconds with one line that names the archives and where to put them.
Every failure is a ``FetchError``; ``gancls fetch`` prints it as one line and exits 1.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..config import FetchParams
from ..files import atomic_path, file_digest, write_json
from .cub import CUB_DIR, SPLITS, TEXT_DIR
from .layouts import CLASS_INFO_FILE, EMBEDDINGS_FILE, FILENAMES_FILE


class FetchError(RuntimeError):
    """A download, check, extraction or ``dvc add`` failed; the message says which file and why."""


CUB_FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")
SPLIT_FILES = (EMBEDDINGS_FILE, FILENAMES_FILE, CLASS_INFO_FILE)
# Which archive (a FetchParams field) provides which part of the raw-data root.
PARTS = {CUB_DIR: "cub", TEXT_DIR: "captions", "train": "embeddings", "test": "embeddings"}
WHAT = {
    "cub": "CUB-200-2011 images",
    "embeddings": "StackGAN birds char-CNN-RNN embeddings",
    "captions": "Reed's text_c10 captions",
    "text_encoder": "Reed's pretrained CUB text encoder",
}


# --- safe extraction ------------------------------------------------------------------------------


def _inside(dest: Path, name: str) -> bool:
    target = (dest / name).resolve()
    return target == dest or dest in target.parents


def _refuse(archive: Path, member: str, why: str):
    raise FetchError(
        f"{archive}: refusing to extract member {member!r}: {why}; nothing was extracted outside the target folder"
    )


def safe_extract(archive: str | Path, dest: str | Path) -> Path:
    """Extract a tar (any compression) or zip archive into ``dest``; refuse any member that would leave it.

    Refused: absolute names, names with ``..`` that leave ``dest``, and links whose target leaves it.
    Tar files go through ``tarfile.data_filter`` (which also drops special files and unsafe modes);
    zip members are all checked before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if tarfile.is_tarfile(archive):

        def strict_data_filter(member: tarfile.TarInfo, path: str):
            # the "data" filter strips a leading "/" (and extracts inside dest); refuse instead.
            if member.name.startswith(("/", "\\")) or PurePosixPath(member.name).is_absolute():
                _refuse(archive, member.name, "absolute path")
            if not _inside(dest, member.name):
                _refuse(archive, member.name, "path leaves the target folder")
            try:
                return tarfile.data_filter(member, path)
            except tarfile.FilterError as exc:
                _refuse(archive, member.name, str(exc))

        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(dest, filter=strict_data_filter)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise FetchError(f"{archive}: cannot extract ({exc})") from exc
    elif zipfile.is_zipfile(archive):
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = info.filename
                    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
                        _refuse(archive, name, "absolute path")
                    if not _inside(dest, name):
                        _refuse(archive, name, "path leaves the target folder")
                zf.extractall(dest)  # zipfile writes symlink members as plain files
        except (zipfile.BadZipFile, OSError) as exc:
            raise FetchError(f"{archive}: cannot extract ({exc})") from exc
    else:
        raise FetchError(f"{archive}: not a tar or zip archive")
    return dest


# --- checksums ------------------------------------------------------------------------------------


def _load_sums(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        sums = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise FetchError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(sums, dict):
        raise FetchError(f"{path}: expected a mapping of file name to SHA-256")
    return sums


def _not_reed(path: Path) -> str | None:
    from ..models.reed_t7 import import_reed_t7
    from ..models.text_encoder import EncoderImportError

    try:
        import_reed_t7(path)
    except EncoderImportError as exc:
        return str(exc).removeprefix(f"{path}: ")
    return None


def check_archive(path: Path, md5: str | None, sums: dict[str, str], name: str, kind: str = "archive") -> str:
    """MD5 (when known) and the recorded SHA-256 of ``path``, then its kind (``archive``: tar or zip;
    ``t7``: Reed's encoder); a bad file is removed.  Returns its SHA-256."""
    problem = None
    if md5 and (got := file_digest(path, "md5")) != md5.lower():
        problem = f"MD5 {got} is not the expected {md5}"
    sha = file_digest(path, "sha256")
    if problem is None and name in sums and sums[name] != sha:
        problem = f"SHA-256 {sha} is not the recorded {sums[name]}"
    if problem is None and kind == "archive" and not (tarfile.is_tarfile(path) or zipfile.is_zipfile(path)):
        problem = "not a tar or zip archive (a download page instead of the file?)"
    if problem is None and kind == "t7" and (why := _not_reed(path)):
        path.unlink(missing_ok=True)
        raise FetchError(f"{name}: not Reed's text encoder ({why}); the file was removed")
    if problem:
        path.unlink(missing_ok=True)
        raise FetchError(f"{name}: checksum mismatch: {problem}; the file was removed, run `gancls fetch` again")
    return sha


# --- downloads ------------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if m:
        return m.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def _download(url: str, out: Path, cfg: FetchParams) -> None:
    """gdown into ``out`` (via its own ``.part`` file, resumed when one is there)."""
    import gdown
    from gdown.exceptions import DownloadError

    def get(resume: bool) -> None:
        gdown.download(
            url=url,
            output=str(out),
            quiet=False,
            resume=resume,
            timeout=(cfg.connect_timeout, cfg.read_timeout),
            retries=cfg.retries,
        )

    try:
        try:
            get(resume=True)
        except DownloadError as exc:
            if "byte range" not in str(exc):
                raise
            # the server cannot resume (no HTTP Range): drop the partial file and start over
            print(f"fetch: {url} cannot resume; downloading {out.name} from the start", file=sys.stderr)
            for part in out.parent.glob(f"{glob.escape(out.name)}*.part"):
                part.unlink()
            get(resume=False)
    except (OSError, DownloadError) as exc:  # requests' errors are OSErrors
        raise ConnectionError(_reason(exc)) from exc


def offline_hint(cfg: FetchParams, keys: list[str]) -> str:
    names = [f"{getattr(cfg, k).file} ({WHAT[k]}, {getattr(cfg, k).url})" for k in keys]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    parts = [p for p, k in PARTS.items() if k in keys]
    unpacked = f" (or the unpacked {', '.join(p + '/' for p in parts)} into {cfg.data_dir}/)" if parts else ""
    return f"without network, put {listed} into {cfg.download_dir}/{unpacked} and run `gancls fetch` again"


def ensure_archive(key: str, cfg: FetchParams, sums: dict[str, str], pending: list[str], kind: str = "archive") -> Path:
    """The checked file of ``key`` in ``download_dir``: the one already there, or downloaded."""
    src = getattr(cfg, key)
    final = Path(cfg.download_dir) / src.file
    if final.is_file():
        sha = check_archive(final, src.md5, sums, src.file, kind)
    else:
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = final.with_name(final.name + ".download")  # gdown's own .part file is beside it
        if not staged.is_file():
            print(f"fetch: downloading {src.file} ({WHAT[key]}) from {src.url}", file=sys.stderr)
            try:
                _download(src.url, staged, cfg)
            except ConnectionError as exc:
                raise FetchError(
                    f"cannot download {src.file} from {src.url} ({exc}); " + offline_hint(cfg, pending)
                ) from exc
        sha = check_archive(staged, src.md5, sums, src.file, kind)
        os.replace(staged, final)
    if sums.get(src.file) != sha:
        sums[src.file] = sha
        write_json(cfg.checksums, sums)
        print(f"fetch: recorded SHA-256 of {src.file} in {cfg.checksums}", file=sys.stderr)
    return final


# --- the raw-data root ----------------------------------------------------------------------------


def _image_stems(data_dir: Path) -> list[str] | None:
    path = data_dir / CUB_DIR / "images.txt"
    if not path.is_file():
        return None
    stems = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            stems.append(parts[1])
    return stems


def part_complete(data_dir: Path, part: str) -> bool:
    folder = data_dir / part
    if not folder.is_dir():
        return False
    if part in SPLITS:
        return all((folder / f).is_file() and (folder / f).stat().st_size > 0 for f in SPLIT_FILES)
    stems = _image_stems(data_dir)
    if part == CUB_DIR:
        return (
            all((folder / f).is_file() for f in CUB_FILES)
            and bool(stems)
            and all((folder / "images" / s).is_file() for s in stems)
        )
    if stems:  # text_c10: one caption file per CUB image
        return all((folder / s).with_suffix(".txt").is_file() for s in stems)
    return any(folder.rglob("*.txt"))


def _find(root: Path, part: str) -> Path | None:
    """The shallowest folder named ``part`` under ``root`` that holds what ``gancls.data.raw`` reads."""

    def ok(d: Path) -> bool:
        if part == CUB_DIR:
            return (d / "images.txt").is_file() and (d / "images").is_dir()
        if part in SPLITS:
            return all((d / f).is_file() for f in SPLIT_FILES)
        return any(d.rglob("*.txt"))

    found = sorted((d for d in root.rglob(part) if d.is_dir() and ok(d)), key=lambda d: len(d.parts))
    return found[0] if found else None


def _place(extracted: Path, part: str, data_dir: Path, archive: Path) -> None:
    src = _find(extracted, part)
    if src is None:
        raise FetchError(f"{archive}: holds no {part}/ folder in the layout gancls.data.raw reads")
    with atomic_path(data_dir / part) as work:
        if part in SPLITS:  # only the pickles gancls.data.raw reads (not the large image pickles)
            work.mkdir()
            for f in SPLIT_FILES:
                os.replace(src / f, work / f)
        else:
            os.replace(src, work)
    print(f"fetch: {data_dir / part} in place", file=sys.stderr)


def dvc_add(data_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "dvc", "add", str(data_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        raise FetchError(
            f"`dvc add {data_dir}` failed: {lines[-1] if lines else proc.returncode} "
            f"(set fetch.dvc_add: false outside a DVC repository)"
        )


def place_text_encoder(cfg: FetchParams, dest: str, sums: dict[str, str], summary: dict) -> None:
    """Step 5 of the module docstring: Reed's ``.t7`` to ``data_dir / dest``, unless already there."""
    target = Path(cfg.data_dir) / dest
    if cfg.text_encoder is None or target.is_file():
        (summary["kept"] if target.is_file() else summary["skipped"]).append(dest)
        return
    try:
        t7 = ensure_archive("text_encoder", cfg, sums, ["text_encoder"], kind="t7")
    except FetchError as exc:
        if "cannot download" not in str(exc):
            raise
        print(f"fetch: warning: {exc} (only text_encoder.source: reed needs it)", file=sys.stderr)
        summary["skipped"].append(dest)
        return
    with atomic_path(target) as tmp:
        shutil.copyfile(t7, tmp)
    summary["archives"][cfg.text_encoder.file] = sums[cfg.text_encoder.file]
    summary["placed"].append(dest)
    print(f"fetch: {target} in place", file=sys.stderr)


def fetch(cfg: FetchParams, encoder_dest: str | None = None) -> dict:
    """Assemble ``cfg.data_dir`` (see the module docstring); returns what was kept, downloaded and placed.

    ``encoder_dest``: where under ``data_dir`` Reed's encoder goes (``text_encoder.reed_t7``); None: skipped.
    """
    data_dir = Path(cfg.data_dir)
    for stale in data_dir.parent.glob(f".{data_dir.name}.fetch-*"):  # left by a killed fetch
        shutil.rmtree(stale, ignore_errors=True)
    missing = [p for p in PARTS if not part_complete(data_dir, p)]
    keys = list(dict.fromkeys(PARTS[p] for p in missing))
    summary = {
        "data_dir": str(data_dir),
        "kept": [p for p in PARTS if p not in missing],
        "placed": [],
        "skipped": [],
        "archives": {},
    }
    sums = _load_sums(Path(cfg.checksums))
    archives = {}
    for i, key in enumerate(keys):  # all archives first: an offline fetch stops before unpacking
        archives[key] = ensure_archive(key, cfg, sums, keys[i:])
        summary["archives"][getattr(cfg, key).file] = sums[getattr(cfg, key).file]
    data_dir.mkdir(parents=True, exist_ok=True)
    for key, archive in archives.items():
        print(f"fetch: extracting {archive}", file=sys.stderr)
        tmp = Path(tempfile.mkdtemp(prefix=f".{data_dir.name}.fetch-", dir=data_dir.parent))
        try:
            safe_extract(archive, tmp)
            for part in (p for p in missing if PARTS[p] == key):
                _place(tmp, part, data_dir, archive)
                summary["placed"].append(part)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    still = [p for p in PARTS if not part_complete(data_dir, p)]
    if still:
        raise FetchError(
            f"{data_dir}: {', '.join(still)} incomplete after extraction (captions or images "
            f"missing for some entries of {CUB_DIR}/images.txt?)"
        )
    if encoder_dest:
        place_text_encoder(cfg, encoder_dest, sums, summary)
    if cfg.dvc_add:
        dvc_add(data_dir)
        summary["dvc"] = f"{data_dir}.dvc"
    return summary
