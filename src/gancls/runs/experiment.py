"""``gancls experiment``: ``dvc exp run`` with settings from a file and ``-S``, checked before DVC starts
and undone in the workspace when the run fails.

``make run-cub`` is ``gancls experiment --settings configs/reed_cub.yaml``.  Before DVC runs anything:

* the settings merged into params.yaml are checked against the schema (one line naming the key);
* a run that reads raw data other than the embedded sample stops when that folder is missing, with
  one line naming it and the command that fills it (``gancls fetch``).

``dvc exp run -S`` writes the settings into params.yaml (and DVC rewrites ``*.dvc`` files it passes
through); when the run fails or is interrupted, those files are put back byte for byte, so the
workspace is not left switched to settings that did not run.  A run that succeeds leaves them as DVC
does: the workspace holds the experiment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from ..config import ConfigError, Params, parse_params
from ..data.cub import CUB_DIR


class RawDataMissing(ConfigError):
    """The run reads a raw-data folder that is not there."""


def settings_file(path: str | Path) -> list[str]:
    """A nested YAML of settings (``configs/reed_cub.yaml``) as ``key.sub=value`` overrides, each value
    written so that DVC's override grammar reads it back as the same type (strings quoted)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of params.yaml sections, got {type(data).__name__}")
    return settings_of(data)


def settings_of(data: dict, prefix: str = "") -> list[str]:
    """Nested sections as ``key.sub=value`` overrides (values as JSON: DVC reads them back as written)."""
    out = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += settings_of(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out


def raw_with(overrides: list[str], params_file: str | Path = "params.yaml") -> dict:
    """params.yaml (as a dict) with ``overrides`` applied as ``dvc exp run -S`` applies them (DVC's Hydra
    override grammar, on a copy); ConfigError names a setting DVC cannot apply."""
    from dvc.exceptions import DvcException
    from dvc.utils.hydra import apply_overrides

    params_file = Path(params_file)
    mine = []
    for item in overrides:
        file, sep, rest = item.partition(":")
        if sep and "=" not in file:  # DVC's FILE:key=value form
            if Path(file).name != params_file.name:
                raise ConfigError(f"settings: {item!r} sets another file than {params_file}")
            item = rest
        mine.append(item)
    with tempfile.TemporaryDirectory(prefix="gancls-settings.") as tmp:
        copy = Path(tmp) / "params.yaml"
        shutil.copyfile(params_file, copy)
        try:
            apply_overrides(copy, mine)
        except DvcException as exc:
            why = exc.__cause__ or exc
            raise ConfigError(f"settings {' '.join(mine)}: {str(why).splitlines()[0]}") from None
        return yaml.safe_load(copy.read_text(encoding="utf-8"))


def params_with(overrides: list[str], params_file: str | Path = "params.yaml") -> Params:
    """``raw_with``, checked against the schema; ConfigError names the bad setting or key."""
    return parse_params(raw_with(overrides, params_file), source=f"{params_file} with the settings")


def missing_raw_data(params: Params, root: str | Path = ".") -> str | None:
    """Why the raw data this run reads is not there, or None (the embedded sample is made by a stage).

    Relative paths of params are taken from ``root``, the repository."""
    from ..data.fetch import PARTS, offline_hint

    raw = Path(params.data.raw_dir)
    if raw == Path(params.sample.out_dir):
        return None
    fetch = params.fetch
    how = (
        f"run `gancls fetch` (it downloads, checks and unpacks CUB-200-2011 and Reed's embeddings into "
        f"{fetch.data_dir}/; {offline_hint(fetch, list(dict.fromkeys(PARTS.values())))}; docs/CUB.md)"
    )
    if Path(fetch.data_dir) != raw:
        how = f"put CUB_200_2011/ and the embeddings there, or set data.raw_dir to {fetch.data_dir} and " + how
    if not (Path(root) / raw).is_dir():
        return f"{raw}/ (data.raw_dir) does not exist: {how}"
    if not (Path(root) / raw / CUB_DIR / "images.txt").is_file():
        return f"{raw}/ (data.raw_dir) holds no {CUB_DIR}/images.txt: {how}"
    t7 = raw / params.text_encoder.reed_t7
    if params.text_encoder.source == "reed" and not (Path(root) / t7).is_file():
        return (
            f"{t7}: Reed's text encoder is not there (text_encoder.source is reed): put "
            f"{fetch.text_encoder.file if fetch.text_encoder else Path(t7).name} into {fetch.download_dir}/ "
            "and run `gancls fetch`, or add -S text_encoder.source=fit to fit one to the data instead"
        )
    return None


def _protected(root: Path) -> dict[Path, bytes]:
    """The files ``dvc exp run`` rewrites in the workspace before a stage runs: params.yaml, ``*.dvc``."""
    files = [root / "params.yaml", *sorted(root.glob("*.dvc"))]
    return {f: f.read_bytes() for f in files if f.is_file()}


def restore(saved: dict[Path, bytes]) -> list[str]:
    """Put each file back to the bytes it had (atomically); the names of those that had changed."""
    restored = []
    for path, data in saved.items():
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_name(f".{path.name}.restore")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            restored.append(path.name)
    return restored


def run_experiment(
    overrides: list[str], params_file: str | Path = "params.yaml", dvc_args: list[str] | None = None
) -> int:
    """Check, then ``dvc exp run -S ...`` in the folder of ``params_file``; returns DVC's exit status.

    Raises ConfigError (or RawDataMissing) before DVC starts.  When DVC fails, or is stopped by Ctrl-C
    (which reaches DVC itself: this process waits for it) or SIGTERM (passed on to DVC), params.yaml and
    ``*.dvc`` are put back; ``dvc.lock`` and the outputs stay as the stages that completed left them,
    so ``dvc status`` shows those stages stale until the next run.
    """
    params_file = Path(params_file)
    root = params_file.resolve().parent
    missing = missing_raw_data(params_with(overrides, params_file), root)
    if missing:
        raise RawDataMissing(missing)
    saved = _protected(root)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the stages call `gancls`
    cmd = [sys.executable, "-m", "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)], *(dvc_args or [])]
    code = 1
    proc = subprocess.Popen(cmd, cwd=root, env=env)
    handlers = {
        signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
        signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM)),
    }
    try:
        code = proc.wait()
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        if code != 0:
            restored = restore(saved)
            if restored:
                print(
                    f"gancls experiment: dvc exp run failed (exit {code}); put back as they were: "
                    f"{', '.join(restored)}",
                    file=sys.stderr,
                )
    return code
