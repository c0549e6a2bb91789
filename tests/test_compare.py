"""``brainbench compare``: seeds grouped, t-intervals, best per column by direction, formats."""

from __future__ import annotations

import csv
import io
import json

import pytest
import scipy.stats
from typer.testing import CliRunner

from brainbench.matrix.summary import cell_rows, directions, group_rows, t_interval, to_markdown
from brainbench.tracking_query import RunView
from tests.test_matrix_run import run_spec, store_uri, template_store, tiny_plugin  # noqa: F401

SPEC = """
name = "tiny-compare"
[defaults]
task = "tiny-task"
device = "cpu"
[axes]
"encoder_options.alpha" = [0.01, 1000.0]
encoder = ["tiny-ridge"]
subject = [1]
seed = [0, 1, 2]
"""


def view(
    run_id: str,
    encoder: str,
    seed: int,
    top1: float,
    mse: float,
    status: str = "FINISHED",
    alpha: str = "1",
    start: int = 0,
) -> RunView:
    params = {
        "encoder": encoder,
        "task": "t",
        "dataset": "d",
        "subject": "1",
        "seed": str(seed),
        "cell_key": f"{encoder}{alpha}{seed}",
        "encoder.alpha": alpha,
        "metric.top1.higher_is_better": "true",
        "metric.mse.higher_is_better": "false",
    }
    return RunView(
        run_id,
        run_id,
        status,
        start,
        None,
        params,
        {"test.top1": top1, "test.mse": mse, "test.top1.ci_low": 0.0, "n_parameters": 10.0},
        {"brainbench.cell_key": params["cell_key"]},
    )


def test_t_interval_matches_scipy():
    values = [0.52, 0.61, 0.57, 0.49]
    stat = t_interval(values)
    low, high = scipy.stats.t.interval(
        0.95, len(values) - 1, loc=sum(values) / 4, scale=scipy.stats.sem(values)
    )
    assert stat.mean == pytest.approx(sum(values) / 4)
    assert (stat.low, stat.high) == (pytest.approx(low), pytest.approx(high))
    single = t_interval([0.3])
    assert single.low is None and single.text() == "0.3000"


def test_groups_over_seeds_and_best_by_direction():
    runs = [
        view("a0", "ridge", 0, 0.5, 2.0),
        view("a1", "ridge", 1, 0.7, 1.0),
        view("b0", "mlp", 0, 0.4, 0.5),
        view("b1", "mlp", 1, 0.4, 0.7),
        view("c0", "mlp", 0, 0.9, 9.0, alpha="5"),
        view("k", "ridge", 2, 0.0, 0.0, status="KILLED", start=-1),
        view("k2", "ridge", 2, 0.6, 1.5, start=5),
    ]
    rows = cell_rows(runs)
    assert len(rows) == 6 and {r.run_id for r in rows} >= {"k2"} and "k" not in {r.run_id for r in rows}
    groups = {(g.encoder, g.variant): g for g in group_rows(rows)}
    assert set(groups) == {("ridge", ""), ("mlp", "encoder.alpha=1"), ("mlp", "encoder.alpha=5")}
    ridge = groups[("ridge", "")]
    assert ridge.seeds == ["0", "1", "2"] and ridge.metrics["top1"].mean == pytest.approx(0.6)
    assert ridge.metrics["top1"].low is not None and "mse" in groups[("mlp", "encoder.alpha=1")].best
    assert groups[("mlp", "encoder.alpha=5")].best == {"top1"}  # highest top1; its mse is the worst
    assert directions(rows) == {"top1": True, "mse": False}
    table = to_markdown(list(groups.values()), directions(rows))
    assert "**0.9000**" in table and "top1 ↑" in table and "mse ↓" in table


def test_compare_cli_reads_a_matrix_back(tiny_plugin, store_uri):  # noqa: F811
    from brainbench.cli.app import build_app

    report = run_spec(SPEC, store_uri)
    assert report.ran == 6
    runner = CliRunner()
    env = {"COLUMNS": "220", "MLFLOW_TRACKING_URI": store_uri}
    table = runner.invoke(build_app(), ["compare"], env=env)
    assert table.exit_code == 0, table.output
    assert "tiny-compare" in table.output and "★" in table.output and "encoder.alpha=0.01" in table.output

    as_csv = runner.invoke(build_app(), ["compare", report.parent_run_id, "--format", "csv"], env=env)
    records = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(records) == 2 and {r["n_seeds"] for r in records} == {"3"}
    as_json = json.loads(runner.invoke(build_app(), ["compare", "brainbench", "-f", "json"], env=env).output)
    assert as_json["higher_is_better"] == {"top1": True, "mse": False}
    by_variant = {r["variant"]: r for r in as_json["rows"]}
    # Less shrinkage fits this low-noise data better: lower error, and it is marked best on mse.
    weak, strong = by_variant["encoder.alpha=0.01"], by_variant["encoder.alpha=1000.0"]
    assert weak["mse.mean"] < strong["mse.mean"] and "mse" in weak["best"]
    assert weak["mse.ci_low"] < weak["mse.mean"] < weak["mse.ci_high"]
    markdown = runner.invoke(build_app(), ["compare", "-f", "markdown"], env=env).output
    assert markdown.startswith("| encoder | task |") and markdown.count("\n| tiny-ridge") == 2
    missing = runner.invoke(build_app(), ["compare", "no-such-experiment"], env=env)
    assert missing.exit_code != 0 and "no-such-experiment" in str(missing.exception)
