"""Writing outputs safely: atomic replacement, a full disk as one line, digests, JSON and torch files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary sibling path; move it onto ``target`` only if the block succeeds.

    Works for files and directories, so a failed stage never leaves half-written output and never
    destroys what was there before.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}@{socket.gethostname()}.", dir=target.parent))
    work = tmp / target.name
    try:
        _mark_ignored(tmp)  # a killed writer's leftovers are never `git add`ed
        yield work
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(work, target)
    except Exception as exc:  # a full disk (or quota, file-size limit) becomes one line naming the target
        code = _no_space(exc)
        if code is None:
            raise
        raise OSError(code, f"{target}: not written ({os.strerror(code)}); any earlier version is kept") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _mark_ignored(folder: Path) -> None:
    """Write ``folder/.gitignore`` ("*") so that its name appears with its content: on Linux an unnamed file,
    written, then linked (a writer killed before the link leaves an empty, invisible folder; one killed
    between creating and writing a named file left an empty marker, and git saw the folder: CI, 2026-12-08)."""
    marker = folder / ".gitignore"
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o644)
    except (AttributeError, OSError):  # not Linux, or a file system without unnamed files
        marker.write_text("*\n")
        return
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.write(fd, b"*\n")
        # linkat(AT_SYMLINK_FOLLOW), as open(2) documents for O_TMPFILE: os.link takes linkat, not link, when
        # given a dir_fd (ignored here: the path is absolute), and follows /proc's link to the open file
        os.link(f"/proc/self/fd/{fd}", marker, src_dir_fd=dir_fd, follow_symlinks=True)
    except OSError:  # no /proc
        marker.write_text("*\n")
    finally:
        os.close(fd)
        os.close(dir_fd)


def _remove_stale(target: Path) -> None:
    """Remove temporary siblings of ``target`` left by killed writers (a dead process of this host)."""
    host = socket.gethostname()
    for stale in target.parent.glob(f".{target.name}.*@*.*"):
        owner = stale.name[len(target.name) + 2 :].rsplit(".", 1)[0]
        pid, _, where = owner.partition("@")
        if where != host or not pid.isdigit() or not stale.is_dir():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            if (stale / ".gitignore").is_file():
                shutil.rmtree(stale, ignore_errors=True)
            else:  # killed between creating the folder and marking it: empty, so rmdir suffices
                with contextlib.suppress(OSError):
                    stale.rmdir()
        except OSError:
            pass  # alive (another user's process): leave it


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def _no_space(exc: BaseException | None) -> int | None:
    """The errno of a no-space OSError in ``exc`` or what it was raised from (torch wraps it), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc.errno
        exc = exc.__cause__ or exc.__context__
    return None


def file_digest(path: str | Path, algorithm: str = "sha1") -> str:
    """Hex digest of a file's bytes (``hashlib`` algorithm name)."""
    import hashlib

    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def save_torch(obj, path: str | Path) -> None:
    """``torch.save`` through a Python file, so that a failed write raises the OSError (errno) behind it."""
    import torch

    with open(path, "wb") as f:
        torch.save(obj, f)


def write_json(path: str | Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
