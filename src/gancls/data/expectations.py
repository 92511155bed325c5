"""Running Great Expectations (1.x) over small pandas tables and reporting what failed, in one line
per violated expectation that names the first offending file.

``run_suites`` validates each (name, table, checks) as one GX batch in a throw-away file-mode context,
writes the results to ``<report_dir>/<json_name>`` with a derived ``success`` flag and ``failures``
list, and copies GX's HTML Data Docs to ``<report_dir>/data_docs/``.  ``gancls.data.validate`` builds the
tables and chooses the checks.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["path"], "partial_unexpected_count": 20}


class ValidationFailed(Exception):
    """The data broke expectations (or its layout is wrong); the message names the files."""


@dataclass
class Check:
    label: str
    expectation: object  # a gx.expectations.* instance
    detail: Callable[[dict], str] | str  # row -> why it is bad; for table-level checks "file: what"


def in_set(column: str, values: list, detail: Callable[[dict], str]) -> Check:
    import great_expectations.expectations as gxe

    return Check(column, gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values), detail)


def between(column: str, detail: Callable[[dict], str], **bounds) -> Check:
    import great_expectations.expectations as gxe

    return Check(column, gxe.ExpectColumnValuesToBeBetween(column=column, **bounds), detail)


def run_suites(
    tables: list[tuple[str, pd.DataFrame, list[Check]]],
    report_dir: Path,
    json_name: str,
    show: Callable[[str], str],
    prefix: str,
    extra: dict,
) -> tuple[bool, list[str]]:
    """Validate each (name, table, checks) as one batch; write the JSON and Data Docs; list failures."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    report_dir.mkdir(parents=True, exist_ok=True)
    results, failures = {}, []
    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        context = gx.get_context(mode="file", project_root_dir=tmp)
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        source = context.data_sources.add_pandas("tables")
        for name, df, checks in tables:
            by_label = {c.label: c for c in checks}
            batch = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
            suite = context.suites.add(gx.ExpectationSuite(name=name))
            for c in checks:
                c.expectation.meta = {"check": c.label}
                suite.add_expectation(c.expectation)
            definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
            result = definition.run(batch_parameters={"dataframe": df}, result_format=RESULT_FORMAT)
            results[name] = result.to_json_dict()
            order = {c.label: i for i, c in enumerate(checks)}
            for r in sorted(result.results, key=lambda r: order[r.expectation_config.meta["check"]]):
                if not r.success:
                    failures.append(_describe(r, by_label[r.expectation_config.meta["check"]], df, show, prefix))
        context.build_data_docs()
        site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
        docs = report_dir / "data_docs"
        shutil.rmtree(docs, ignore_errors=True)
        shutil.copytree(site, docs)
    success = not failures
    report = {"success": success, "failures": failures, **extra, "validations": results}
    (report_dir / json_name).write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    return success, failures


def _describe(r, check: Check, df: pd.DataFrame, show: Callable[[str], str], prefix: str) -> str:
    """One line: '<first bad file>: <why> [<expectation>(<column>): <n> bad rows; also <files>]'."""
    cfg, res = r.expectation_config, r.result or {}
    what = f"{cfg.type}({cfg.kwargs.get('column', cfg.kwargs.get('column_B', 'table'))})"
    if r.exception_info and r.exception_info.get("raised_exception"):
        return f"{prefix}{check.label}: {what} could not run ({r.exception_info['exception_message']})"
    bad = [d["path"] for d in res.get("partial_unexpected_index_list") or [] if "path" in d]
    if callable(check.detail) and bad:
        row = df[df.path == bad[0]].iloc[0].to_dict()
        also = f"; also {', '.join(show(p) for p in bad[1:5])}" if len(bad) > 1 else ""
        return (
            f"{prefix}{show(bad[0])}: {check.detail(row)} "
            f"[{what}: {res.get('unexpected_count')} of {res.get('element_count')} rows bad{also}]"
        )
    wanted = ", ".join(f"{k}={v}" for k, v in cfg.kwargs.items() if k not in ("batch_id", "column"))
    return f"{prefix}{check.detail}, observed {res.get('observed_value')} [{what}: {wanted}]"


def fail_early(report: Path, msg: str, extra: dict, cause: Exception | None = None) -> None:
    """A failure before GX could run (bad layout): write a minimal report, then raise."""
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps({"success": False, "failures": [msg], **extra}, indent=1))
    raise ValidationFailed(msg) from cause


def raise_failures(failures: list[str], report: Path) -> None:
    raise ValidationFailed("\n".join(failures + [f"(report: {report}, {report.parent / 'data_docs'}/index.html)"]))
