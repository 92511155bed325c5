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
import subprocess
import sys
from pathlib import Path

import yaml

from .config import ConfigError, Params, parse_params
from .cub import CUB_DIR


class RawDataMissing(ConfigError):
    """The run reads a raw-data folder that is not there."""


def settings_file(path: str | Path) -> list[str]:
    """A nested YAML of settings (``configs/reed_cub.yaml``) as ``key.sub=value`` overrides."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of params.yaml sections, got {type(data).__name__}")

    def flat(node: dict, prefix: str) -> list[str]:
        out = []
        for key, value in node.items():
            if isinstance(value, dict):
                out += flat(value, f"{prefix}{key}.")
            else:
                out.append(f"{prefix}{key}={value if isinstance(value, str) else json.dumps(value)}")
        return out

    return flat(data, "")


def apply_overrides(raw: dict, overrides: list[str], source: str) -> dict:
    """params.yaml's mapping with ``key.sub=value`` set (values parsed as YAML, as ``dvc exp run -S`` does)."""
    out = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{source}: setting {item!r} is not KEY=VALUE")
        node, parts = out, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{source}: {key}: {part!r} is not a section of params.yaml")
            node = node[part]
        node[parts[-1]] = yaml.safe_load(value) if value else None
    return out


def missing_raw_data(params: Params, root: str | Path = ".") -> str | None:
    """Why the raw data this run reads is not there, or None (the embedded sample is made by a stage).

    Relative paths of params are taken from ``root``, the repository."""
    raw = Path(params.data.raw_dir)
    if raw == Path(params.sample.out_dir):
        return None
    fetch = params.fetch
    how = (f"run `gancls fetch` to download, check and unpack CUB-200-2011 and Reed's embeddings into "
           f"{fetch.data_dir}/ (offline: put {fetch.cub.file}, {fetch.embeddings.file} and {fetch.captions.file} "
           f"into {fetch.download_dir}/ first; README 'Real CUB data')")
    if Path(fetch.data_dir) != raw:
        how = (f"put CUB_200_2011/ and the embeddings there, or set data.raw_dir to {fetch.data_dir} and "
               + how)
    if not (Path(root) / raw).is_dir():
        return f"{raw}/ (data.raw_dir) does not exist: {how}"
    if not (Path(root) / raw / CUB_DIR / "images.txt").is_file():
        return f"{raw}/ (data.raw_dir) holds no {CUB_DIR}/images.txt: {how}"
    return None


def _protected(root: Path) -> dict[Path, bytes]:
    """The files ``dvc exp run`` rewrites in the workspace before a stage runs: params.yaml, ``*.dvc``."""
    files = [root / "params.yaml", *sorted(root.glob("*.dvc"))]
    return {f: f.read_bytes() for f in files if f.is_file()}


def _restore(saved: dict[Path, bytes]) -> list[str]:
    restored = []
    for path, data in saved.items():
        if not path.is_file() or path.read_bytes() != data:
            tmp = path.with_name(f".{path.name}.restore")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            restored.append(path.name)
    return restored


def run_experiment(overrides: list[str], params_file: str | Path = "params.yaml",
                   dvc_args: list[str] | None = None) -> int:
    """Check, then ``dvc exp run -S ...`` in the folder of ``params_file``; returns DVC's exit status.

    Raises ConfigError (or RawDataMissing) before DVC starts; puts params.yaml and ``*.dvc`` back when
    DVC fails or the run is interrupted.
    """
    params_file = Path(params_file)
    root = params_file.resolve().parent
    try:
        raw = yaml.safe_load(params_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{params_file}: cannot be read ({exc})") from None
    params = parse_params(apply_overrides(raw, overrides, "settings"), source=f"{params_file} with the settings")
    missing = missing_raw_data(params, root)
    if missing:
        raise RawDataMissing(missing)
    saved = _protected(root)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the stages call `gancls`
    cmd = [sys.executable, "-m", "dvc", "exp", "run", *[a for o in overrides for a in ("-S", o)], *(dvc_args or [])]
    code = 1
    try:
        code = subprocess.run(cmd, cwd=root, env=env).returncode
    finally:
        if code != 0:
            restored = _restore(saved)
            if restored:
                print(f"gancls experiment: dvc exp run failed (exit {code}); put back as they were: "
                      f"{', '.join(restored)}", file=sys.stderr)
    return code
