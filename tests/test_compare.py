"""``brainbench compare``: seeds grouped, intervals over test items, paired tests against a baseline, tables
that read at 80 and 160 columns, formats; through the installed console script on a store real runs wrote."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from typer.testing import CliRunner

from brainbench.matrix.summary import (
    as_stat,
    cell_rows,
    compare_to_baseline,
    directions,
    group_rows,
    to_latex,
    to_markdown,
)
from brainbench.records.query import RunView
from brainbench.stats import t_interval
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
    stat = as_stat(t_interval(values))
    low, high = scipy.stats.t.interval(
        0.95, len(values) - 1, loc=sum(values) / 4, scale=scipy.stats.sem(values)
    )
    assert stat.mean == pytest.approx(sum(values) / 4)
    assert (stat.low, stat.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    single = as_stat(t_interval([0.3]))
    assert single.low is None and single.text() == "0.300"


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
    assert set(groups) == {("ridge", ""), ("mlp", "alpha=1"), ("mlp", "alpha=5")}
    ridge = groups[("ridge", "")]
    assert ridge.seeds == ["0", "1", "2"] and ridge.metrics["top1"].mean == pytest.approx(0.6)
    assert ridge.metrics["top1"].low is not None and "mse" in groups[("mlp", "alpha=1")].best
    assert groups[("mlp", "alpha=5")].best == {"top1"}  # highest top1; its mse is the worst
    assert directions(rows) == {"top1": True, "mse": False}
    table = to_markdown(list(groups.values()), directions(rows))
    assert "**0.900**" in table and "top1 ↑" in table and "mse ↓" in table
    # Without per-item outcomes: a t interval over seeds, clipped to [0, 1] for an accuracy, unbounded for mse
    assert ridge.metrics["top1"].method == "t interval over 3 seeds" and ridge.metrics["top1"].low >= 0.0


def test_compare_cli_reads_a_matrix_back(tiny_plugin, store_uri):  # noqa: F811
    from brainbench.cli.app import build_app

    report = run_spec(SPEC, store_uri)
    assert report.ran == 6
    runner = CliRunner()
    env = {"COLUMNS": "220", "MLFLOW_TRACKING_URI": store_uri}
    table = runner.invoke(build_app(), ["compare"], env=env)
    assert table.exit_code == 0, table.output
    assert "tiny-compare" in table.output and "*" in table.output and "tiny-ridge alpha=0.01" in table.output

    as_csv = runner.invoke(build_app(), ["compare", report.parent_run_id, "--format", "csv"], env=env)
    records = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(records) == 2 and {r["n_seeds"] for r in records} == {"3"}
    as_json = json.loads(runner.invoke(build_app(), ["compare", "brainbench", "-f", "json"], env=env).output)
    assert as_json["higher_is_better"] == {"top1": True, "mse": False}
    by_variant = {r["variant"]: r for r in as_json["rows"]}
    # Less shrinkage fits this low-noise data better: lower error, and it is marked best on mse.
    weak, strong = by_variant["alpha=0.01"], by_variant["alpha=1000.0"]
    assert weak["mse.mean"] < strong["mse.mean"] and "mse" in weak["best"]
    assert weak["mse.ci_low"] < weak["mse.mean"] < weak["mse.ci_high"]
    markdown = runner.invoke(build_app(), ["compare", "-f", "markdown"], env=env).output
    assert markdown.startswith("**tiny-task** on tiny-data") and markdown.count("\n| tiny-ridge alpha=") == 2
    missing = runner.invoke(build_app(), ["compare", "no-such-experiment"], env=env)
    assert missing.exit_code != 0 and "no-such-experiment" in str(missing.exception)


# ------------------------------------------------------------------ paired tests on hand-made outcomes


def with_outcomes(run: RunView, hits: np.ndarray) -> RunView:
    run.tags["brainbench.higher_is_better"] = json.dumps({"top1": True, "mse": False})
    run.metrics["test.top1"] = float(hits.mean())
    return run


def test_baseline_marks_rows_by_a_holm_corrected_paired_test_on_the_same_items():
    rng = np.random.default_rng(0)
    p = rng.random(400)
    runs, outcomes = [], {}
    for encoder, shift in (("base", 0.0), ("same", 0.0), ("good", 0.25), ("bad", -0.25)):
        for seed in (0, 1):
            hits = (rng.random(400) < np.clip(p + shift, 0, 1)).astype(float)
            run_id = f"{encoder}{seed}"
            runs.append(with_outcomes(view(run_id, encoder, seed, 0.0, 1.0), hits))
            outcomes[run_id] = {"stimulus_ids": list(range(400)), "outcomes": {"top1": hits.tolist()}}
    rows = cell_rows(runs)
    for row in rows:
        row.per_item = outcomes[row.run_id]
    groups = {g.encoder: g for g in group_rows(rows)}
    top1 = groups["good"].metrics["top1"]
    assert "hierarchical bootstrap over 2 seeds and 400 items" == top1.method and 0 <= top1.low < top1.high <= 1
    assert compare_to_baseline(list(groups.values()), "base", directions(rows)) == 3  # top1 only: mse has none
    verdicts = {name: g.verdicts["top1"] for name, g in groups.items()}
    assert verdicts == {"base": "baseline", "same": "no difference", "good": "better", "bad": "worse"}
    assert groups["good"].verdicts["mse"] == "untested"
    test = groups["good"].tests["top1"]
    assert test.p_adjusted >= test.p_value and test.low < 0.2 < test.high  # the clipped shift is ~0.2
    latex = to_latex(list(groups.values()), directions(rows), "base")
    assert r"\begin{tabular}" in latex and r"$\blacktriangle$" in latex and r"\textbf{" in latex


def test_rows_say_how_many_seeds_differed_and_show_the_item_only_view_beside():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    fixed = (rng.random(300) < p).astype(float)  # a deterministic fit: both seeds give these outcomes
    runs, outcomes = [], {}
    for encoder, seeds in (("fixed", [fixed, fixed]),
                           ("varied", [(rng.random(300) < np.clip(p + s, 0, 1)).astype(float) for s in (-.1, 0, .1)])):
        for seed, hits in enumerate(seeds):
            run_id = f"{encoder}{seed}"
            runs.append(with_outcomes(view(run_id, encoder, seed, 0.0, 1.0), hits))
            outcomes[run_id] = {"stimulus_ids": list(range(300)), "outcomes": {"top1": hits.tolist()}}
    rows = cell_rows(runs)
    for row in rows:
        row.per_item = outcomes[row.run_id]
    groups = {g.encoder: g for g in group_rows(rows, "both")}
    fixed_row, varied_row = groups["fixed"], groups["varied"]
    assert fixed_row.seed_count == "2 (1 distinct)" and varied_row.seed_count == "3"
    assert fixed_row.metrics["top1"].method == "bootstrap over 300 items (2 seeds with identical outcomes)"
    assert fixed_row.metrics["top1"].item_low is None  # nothing to put beside: it is the item-only interval
    stat = varied_row.metrics["top1"]
    assert stat.method.startswith("hierarchical bootstrap over 3 seeds and 300 items; items: bootstrap")
    assert stat.low < stat.item_low < stat.item_high < stat.high  # the seeds widen it
    assert " items [" in stat.text()
    compare_to_baseline(list(groups.values()), "fixed", directions(rows))
    test = varied_row.tests["top1"]
    assert test.method == ("hierarchical bootstrap over seeds (3 seeds vs 2 seeds with identical outcomes) "
                           "and 300 items")
    assert test.low < test.item_low and test.item_high < test.high
    markdown = to_markdown(list(groups.values()), directions(rows), "fixed")
    assert "| fixed | 1 | 2 (1 distinct) |" in markdown and "items only [95%]" in markdown
    items = {g.encoder: g for g in group_rows(rows, "items")}["varied"].metrics["top1"]
    assert (items.low, items.high) == (stat.item_low, stat.item_high)
    with pytest.raises(ValueError, match="levels"):
        group_rows(rows, "seeds")


# --------------------------------------------------- the console script on a store real ridge runs wrote

RIDGE_SPEC = """
name = "ridge-variants"
[defaults]
task = "retrieval"
device = "cpu"
[axes]
encoder = ["ridge"]
"encoder_options.alpha" = [1e4, 1e9]
subject = [1]
seed = [0]
"""


def console(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("brainbench")  # the installed console script
    return subprocess.run([str(script), *args], capture_output=True, text=True, env={**os.environ, **env},
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def ridge_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("ridge-store")
    env = {"BRAINBENCH_HOME": str(folder / "home"), "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    (folder / "spec.toml").write_text(RIDGE_SPEC)
    done = console("matrix", "run", "spec.toml", env=env, cwd=folder)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return folder, env


@pytest.mark.parametrize("columns", [80, 160])
def test_compare_table_fits_the_terminal_without_broken_words(ridge_store, columns):
    folder, env = ridge_store
    done = console("compare", "--baseline", "ridge alpha=10000.0", env={**env, "COLUMNS": str(columns)}, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), [line for line in lines if len(line) > columns]
    text = done.stdout
    # Whole labels and values: the row labels, 3-digit values with intervals, the short labels' legend.
    assert text.count("ridge alpha=10000.0") >= 2 and "ridge alpha=1000000000.0" in text
    assert "f→i 300w = fmri_to_image_top1_300way (higher is better)" in text  # 400 test items in the demo
    assert "f→i full = fmri_to_image_top1_full (higher is better)" in text
    assert "intervals: bootstrap over 400 items" in text
    # Every metric cell whole on one line: mean [low, high] to 3 digits (2 rows x 4 metrics).
    cells = re.findall(r"\d\.\d{3} \[(\d\.\d{3}), (\d\.\d{3})\]", text)
    assert len(cells) == 8 and all(0.0 <= float(low) <= float(high) <= 1.0 for low, high in cells)
    # A penalty of 1e9 shrinks the predictions to the mean: clearly worse than alpha=100 on full top-1.
    assert "retrieval on synthetic-nsd, subject 1, seeds: 1" in text  # shared by all rows: in the heading
    assert re.search(r"\]\s+▼", text) and re.search(r"^ridge alpha=1000000000.0 .* worse$", text, re.MULTILINE)
    assert re.search(r"f→i full +-0\.\d{3} \[-0\.\d{3}, -0\.\d{3}\]", text)  # the paired difference
    assert "paired tests against ridge alpha=10000.0" in text
    tables = [i for i, line in enumerate(lines) if line.startswith("encoder  ")]
    assert (len(tables) > 2) == (columns == 80)  # split into column groups at 80, one table (+ tests) at 160


def test_compare_formats_from_the_console_script(ridge_store):
    folder, env = ridge_store
    records = json.loads(console("compare", "-f", "json", "-b", "ridge alpha=10000.0", env=env, cwd=folder).stdout)
    assert records["baseline"] == "ridge alpha=10000.0" and records["correction"] == "Holm over all paired tests"
    weak = next(r for r in records["rows"] if r["variant"] == "alpha=1000000000.0")
    metrics = [k[: -len(".vs_baseline")] for k in weak if k.endswith(".vs_baseline")]
    assert len(metrics) == 4
    for name in metrics:  # the verdict follows the corrected p-value and the sign of the difference
        significant = weak[f"{name}.p_holm"] < 0.05 and weak[f"{name}.diff"] != 0
        assert weak[f"{name}.vs_baseline"] == ("worse" if significant and weak[f"{name}.diff"] < 0 else
                                               "better" if significant else "no difference")
        assert weak[f"{name}.p_holm"] >= weak[f"{name}.p"]
    assert "worse" in {weak[f"{name}.vs_baseline"] for name in metrics}
    assert 0.0 <= weak["fmri_to_image_top1_full.ci_low"] <= weak["fmri_to_image_top1_full.ci_high"] <= 1.0
    rows = list(csv.DictReader(io.StringIO(console("compare", "-f", "csv", env=env, cwd=folder).stdout)))
    assert len(rows) == 2 and {r["n_seeds"] for r in rows} == {"1"}
    latex = console("compare", "-f", "latex", env=env, cwd=folder).stdout
    assert latex.startswith(r"\begin{table}") and r"fmri\_to\_image\_top1\_full" in latex
    markdown = console("compare", "-f", "markdown", env=env, cwd=folder).stdout
    assert "| encoder | sub | n |" in markdown and "- f→i full = fmri_to_image_top1_full" in markdown
    unknown = console("compare", "--baseline", "mindeye", env=env, cwd=folder)
    assert unknown.returncode != 0 and "no encoder or row 'mindeye'" in unknown.stderr + unknown.stdout
    assert "Traceback" not in unknown.stderr


def test_compare_says_so_on_a_failed_or_empty_matrix(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("brainbench", artifact_location=str(tmp_path / "artifacts"))
    empty = client.create_run(experiment, tags={"brainbench.kind": "matrix"}, run_name="empty")
    client.set_terminated(empty.info.run_id, "FAILED")
    env = {"MLFLOW_TRACKING_URI": uri, "COLUMNS": "80", "BRAINBENCH_HOME": str(tmp_path / "home")}
    done = console("compare", env=env, cwd=tmp_path)
    assert done.returncode != 0 and "no cells ran" in done.stderr + done.stdout and "Traceback" not in done.stderr
    failed = client.create_run(experiment, tags={"brainbench.kind": "matrix"}, run_name="broken")
    child = client.create_run(
        experiment,
        tags={"brainbench.kind": "cell", "mlflow.parentRunId": failed.info.run_id,
              "brainbench.error": "RuntimeError: out of memory"},
    )
    client.log_param(child.info.run_id, "encoder", "ridge")
    client.set_terminated(child.info.run_id, "FAILED")
    client.set_terminated(failed.info.run_id, "FAILED")
    done = console("compare", env=env, cwd=tmp_path)
    message = done.stderr + done.stdout
    assert done.returncode != 0 and "no cell finished (1 FAILED)" in message and "out of memory" in message


def test_the_mlflow_store_shows_the_answer(ridge_store):
    from mlflow.tracking import MlflowClient

    folder, env = ridge_store
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("brainbench")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # runs view, not traces
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("brainbench.kind") == "matrix")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == [  # what differs first: encoder, options, subject, seed
        "ridge alpha=10000.0 s1 seed0 retrieval", "ridge alpha=1000000000.0 s1 seed0 retrieval"]
    # Summary metrics per row on the parent; the comparison as an MLflow table; a figure per metric.
    assert 0 < parent.data.metrics["ridge alpha_10000.0/s1/fmri_to_image_top1_full"] <= 1
    assert len([k for k in parent.data.metrics if k.endswith("/fmri_to_image_top1_300way")]) == 2
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "summary/comparison.json", str(folder)))
                       .read_text())
    assert {"encoder", "metric", "mean", "ci_low", "ci_high", "interval"} <= set(table["columns"])
    assert len(table["data"]) == 2 * 4
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {f"figures/retrieval_{d}_top1_{w}_by_encoder_subject.png" for d in ("fmri_to_image", "image_to_fmri")
            for w in ("full", "300way")} <= figures
    child = children[0]
    assert not any(k.startswith(("plugin.", "metric.")) for k in child.data.params)
    assert child.data.tags["brainbench.plugin.ridge.version"] and "brainbench.higher_is_better" in child.data.tags
    names = sorted(i.dataset.name for i in child.inputs.dataset_inputs)
    assert names == ["synthetic-nsd s1 test", "synthetic-nsd s1 train"]
    assert {"figures/retrieval_ranks.png"} <= {a.path for a in client.list_artifacts(child.info.run_id, "figures")}


def test_report_writes_a_self_contained_html_and_markdown(ridge_store):
    folder, env = ridge_store
    done = console("report", "-o", "rep", "--baseline", "ridge alpha=10000.0", env=env, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (folder / "rep" / "report.html").read_text()
    markdown = (folder / "rep" / "report.md").read_text()
    assert page.count("data:image/png;base64,") >= 4 and "src='figures/" not in page  # figures inlined
    for text in (page, markdown):
        assert "Paired tests against ridge alpha=10000.0" in text and "worse" in text
        assert "synthetic-nsd s1 test" in text and "brainbench matrix run matrix.toml" in text
        assert '"encoder_options.alpha" = [1e4, 1e9]' in html_unescape(text)
    assert (folder / "rep" / "matrix.toml").exists() and list((folder / "rep" / "figures").glob("*.png"))


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
