"""requirements.lock, pyproject.toml and the running environment agree (fast: no network, no install).

The lock is what `make install` installs (pip install --require-hashes --no-deps) and `make lock` refreshes.
"""

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
LOCK = ROOT / "requirements.lock"
EXTRA = "test"

_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def _entries() -> list[str]:
    """The lock's requirement entries: continuation lines joined, comments and blank lines dropped."""
    text = re.sub(r"\\\n", " ", LOCK.read_text())
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


def _pins() -> dict[str, str]:
    """PEP 503 name -> pinned version."""
    return {canonicalize_name(m.group(1)): m.group(2) for m in map(_PIN.match, _entries()) if m}


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(s) for s in project["dependencies"] + project["optional-dependencies"][EXTRA]]


def test_lock_entries_are_exact_pins_with_hashes():
    entries = _entries()
    assert entries, f"{LOCK} has no requirements"
    bad, names = [], []
    for entry in entries:
        pin, *options = entry.split()
        m = _PIN.fullmatch(pin)
        if not m or not options or not all(_HASH.fullmatch(o) for o in options):
            bad.append(entry[:120])
        else:
            names.append(canonicalize_name(m.group(1)))
    assert not bad, "lock entries that are not `name==version --hash=sha256:...`:\n" + "\n".join(bad)
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"pinned more than once in the lock: {dupes}"


def test_pyproject_requirements_are_locked_at_allowed_versions():
    pins = _pins()
    wrong = []
    for req in _declared():
        if req.marker is not None and not req.marker.evaluate({"extra": EXTRA}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            wrong.append(f"{req}: not in the lock")
        elif not req.specifier.contains(Version(pinned), prereleases=True):
            wrong.append(f"{req}: locked at {pinned}")
    assert not wrong, "pyproject.toml and requirements.lock disagree (run `make lock`):\n" + "\n".join(wrong)


def test_environment_matches_lock():
    installed: dict[str, str] = {}
    for dist in importlib.metadata.distributions():  # in sys.path order: the first is the one imported
        name = dist.metadata["Name"]
        if name:
            installed.setdefault(canonicalize_name(name), dist.version)
    differ = [
        f"{name}: locked {version}, installed {installed.get(name, 'nothing')}"
        for name, version in sorted(_pins().items())
        if name not in installed or Version(installed[name]) != Version(version)
    ]
    assert not differ, (
        f"{len(differ)} package(s) of this environment differ from requirements.lock "
        "(`make install` installs the lock):\n" + "\n".join(differ)
    )
