"""Each stage's seconds (evaluation/stage_times.py): written by `gancls <stage>` only when it succeeds,
read back in the pipeline's order, and shown in the report."""

import json
import time

import pytest

from gancls.evaluation.report import _stages
from gancls.evaluation.stage_times import STAGES, read_times, timed


def test_a_stage_writes_its_seconds_only_when_it_succeeds(tmp_path):
    with timed("train", tmp_path) as clock:
        time.sleep(0.05)
        assert clock.seconds() >= 0.05
    with pytest.raises(RuntimeError), timed("generate", tmp_path):
        raise RuntimeError("stage failed")
    (tmp_path / "evaluate.json").write_text("{half")  # a torn file is skipped, not an error
    times = read_times(tmp_path)
    assert list(times) == ["train"] and times["train"]["seconds"] >= 0.1 - 0.05 and times["train"]["finished"]


def test_the_cli_times_dvc_stages_and_the_report_tables_them(tmp_path, monkeypatch):
    import yaml

    from gancls import cli

    from conftest import ROOT

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["stage_times"] = str(tmp_path / "stages")
    raw["sample"].update(out_dir=str(tmp_path / "sample"), n_classes=4, images_per_class=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    assert cli.main(["--params", str(tmp_path / "params.yaml"), "make-sample"]) == 0
    record = json.loads((tmp_path / "stages" / "make-sample.json").read_text())
    assert record["stage"] == "make-sample" and record["seconds"] > 0
    assert set(STAGES) <= set(cli.build_parser()._subparsers._group_actions[0].choices)  # each is a command
    lines = _stages({"make-sample": record, "evaluate": {"seconds": 3.0, "running": True}})
    assert "| make-sample |" in "\n".join(lines) and "running (until this report)" in lines[-3]
    assert lines[-2].startswith(f"| all | {record['seconds'] + 3.0:.1f} | 100% |")


def test_the_stages_are_dvc_yamls_in_its_order():
    import yaml

    from conftest import ROOT

    assert tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) == STAGES
