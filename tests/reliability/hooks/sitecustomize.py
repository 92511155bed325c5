"""Test hook, active only when GANCLS_TEST_WRITE_PAUSE is set (tests/reliability/test_kill.py puts this
folder on PYTHONPATH): ``files.atomic_path`` pauses that many seconds after an output whose name matches
GANCLS_TEST_WRITE_PAUSE_NAMES (comma-separated globs) is written to its temporary sibling and before it
is moved into place, so that a SIGKILL can land mid-write."""

import os

if os.environ.get("GANCLS_TEST_WRITE_PAUSE"):
    import contextlib
    import fnmatch
    import time
    from pathlib import Path

    import gancls.files as _config

    _real = _config.atomic_path

    @contextlib.contextmanager
    def _paused(target):
        names = os.environ.get("GANCLS_TEST_WRITE_PAUSE_NAMES", "*").split(",")
        with _real(target) as work:
            yield work
            if any(fnmatch.fnmatch(Path(target).name, n) for n in names):
                time.sleep(float(os.environ["GANCLS_TEST_WRITE_PAUSE"]))

    _config.atomic_path = _paused
