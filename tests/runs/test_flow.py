"""The Prefect flow drives the DVC stages on the tiny configuration and publishes the metrics."""

import json

from prefect.testing.utilities import prefect_test_harness

from flows.pipeline import pipeline


def test_flow_runs_pipeline_and_publishes_metrics(project_clone, shared_dvc_cache):
    repo = project_clone(cache=shared_dvc_cache)
    with prefect_test_harness():
        rows = pipeline(root=str(repo))
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        with get_client(sync_client=True) as client:
            arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gancls-metrics"])))
            reports = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["gancls-report"]))
            )
    scores = json.loads((repo / "metrics/scores.json").read_text())
    by_metric = {(r["file"], r["metric"]): r["value"] for r in rows}
    assert by_metric[("metrics/scores.json", "fid")] == scores["fid"]
    assert ("dvclive/metrics.json", "d_loss") in by_metric
    assert len(arts) == 1 and arts[0].type == "table"
    assert by_metric[("metrics/scores.json", "text_match.accuracy")] == scores["text_match"]["accuracy"]
    assert len(reports) == 1 and reports[0].type == "markdown" and "real held-out images" in reports[0].data
