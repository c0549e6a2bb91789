"""What a new user does first: install, `brainbench run ridge --task retrieval`, look in MLflow."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, pip_install_target, run_cli


def read_runs(db: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("brainbench")
    return client, client.search_runs([experiment.experiment_id])


def test_demo_runs_on_the_simulator_and_lands_in_mlflow(tmp_path: Path, isolated_home: Path):
    result = run_cli("run", "ridge", "--task", "retrieval", cwd=tmp_path, env={"BRAINBENCH_HOME": str(isolated_home)})
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "fmri_to_image" in out.replace("-", "_").lower() or "fMRI" in out
    assert "synthetic" in out.lower()
    # MLflow's default store in the working directory
    client, runs = read_runs(tmp_path / "mlflow.db")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["encoder"] == "ridge" and params["task"] == "retrieval" and params["dataset"] == "synthetic-nsd"
    assert params["synthetic"] == "true" and params["subject"] == "1" and params["seed"] == "0"
    assert "brainbench_version" in params and "brainbench.plugin.ridge.version" in run.data.tags
    assert not any(k.startswith(("plugin.", "metric.")) for k in params)  # versions and directions are tags
    assert run.info.run_name == "ridge s1 seed0 retrieval"
    contexts = {i.dataset.name: [t.value for t in i.tags] for i in run.inputs.dataset_inputs}
    assert contexts == {"synthetic-nsd s1 train": ["train"], "synthetic-nsd s1 test": ["test"]}
    assert run.data.tags["brainbench.synthetic"] == "true"
    test_metrics = {k: v for k, v in run.data.metrics.items() if k.startswith("test.")}
    assert test_metrics, run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "results.json", "metrics.md", "checkpoint", "per_item.json"} <= artifacts
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/retrieval_ranks.png" in figures  # every retrieval run has a figure
    # MLflow 3 opens the experiment on the runs table (classic ML), not on GenAI traces
    assert client.get_experiment_by_name("brainbench").tags["mlflow.experimentKind"] == "custom_model_development"
    # retrieval on the simulator is far above chance (1/N, N = 400 test images at the demo scale)
    for direction in ("fmri_to_image", "image_to_fmri"):
        assert test_metrics[f"test.{direction}_top1_full"] >= 5 / 400, test_metrics


def test_third_party_plugin_runs_through_brainbench_run(tmp_path: Path, isolated_home: Path):
    site = tmp_path / "site"
    pip_install_target(REPO / "plugins" / "examples" / "brainbench-knn", site)
    env = {"PYTHONPATH": str(site), "BRAINBENCH_HOME": str(isolated_home)}
    result = run_cli("run", "knn", "--task", "mean-cosine", "--tracking-uri", f"sqlite:///{tmp_path}/m.db",
                     cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mean_cosine" in result.stdout
    _, runs = read_runs(tmp_path / "m.db")
    assert runs[0].data.params["encoder"] == "knn" and runs[0].data.metrics["test.mean_cosine"] > 0.0
