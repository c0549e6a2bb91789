"""Task ``laion`` with a prior, and its default gallery without the test stimuli."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainbench.errors import UnknownNameError
from brainbench.options import OptionError
from brainbench_laion.index import LocalIndex
from brainbench_laion.task import LaionTask, ensure_default_gallery, stimulus_of
from brainbench_laion.testing import FakeDataset


def every_item(index_dir: Path) -> list[dict]:
    """Metadata of every row of a built (flat) index: one exhaustive search."""
    index = LocalIndex.open(index_dir)
    found = index.search(np.ones((1, index.dim), dtype=np.float32), index.ntotal)
    return found.metadata[0]


@pytest.mark.parametrize("include", [False, True])
def test_default_gallery_holds_the_test_stimuli_only_when_asked(include):
    dataset = FakeDataset(dim=16)
    test_ids = set(dataset.trials(1, "test").stimulus_ids.tolist())
    items = every_item(ensure_default_gallery(dataset, 300, 0, include_test=include))
    stimuli = {stimulus_of(item) for item in items} - {-1}
    if include:
        assert len(items) == 300 + len(test_ids) and stimuli == test_ids
    else:
        assert len(items) == 300 and stimuli == set()


def test_without_test_stimuli_the_hit_rates_are_not_reported(tmp_path):
    dataset = FakeDataset(dim=16)
    ids = dataset.trials(1, "test").stimulus_ids
    from brainbench.interfaces import EvalContext

    def scores(**options):
        ctx = EvalContext(dataset.embeddings[ids], dataset.embeddings[ids], ids, dataset, None, 1, 0,
                          tmp_path / str(options))
        return {r.name: r.value for r in LaionTask(gallery_size=300, **options).evaluate(ctx)}

    excluded, included = scores(), scores(include_test_images=True)
    assert "gt_top1" not in excluded and "gt_recall_at_k" not in excluded
    assert excluded["candidate_cosine"] < 0.999 and excluded["query_cosine"] == pytest.approx(1.0)
    assert included["gt_top1"] == 1.0 and included["candidate_cosine"] == pytest.approx(1.0, abs=1e-3)


def test_prior_names_and_options_are_checked_when_the_task_is_built():
    with pytest.raises(UnknownNameError, match="did you mean 'diffusion'"):
        LaionTask(prior="difusion")
    with pytest.raises(OptionError, match="deptth"):
        LaionTask(prior="diffusion", prior_opts=["deptth=2"])
    with pytest.raises(ValueError, match="without a prior"):
        LaionTask(prior_opts=["depth=2"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        LaionTask(prior="diffusion", prior_opts=["depth"])
    assert LaionTask(prior="diffusion", prior_opts="depth=2,epochs=3").prior_options == {"depth": "2", "epochs": "3"}


def test_a_prior_without_training_predictions_is_a_clear_error(tmp_path):
    from brainbench.errors import DataError
    from brainbench.interfaces import EvalContext

    dataset = FakeDataset(dim=16)
    ids = dataset.trials(1, "test").stimulus_ids
    ctx = EvalContext(dataset.embeddings[ids], dataset.embeddings[ids], ids, dataset, None, 1, 0, tmp_path)
    with pytest.raises(DataError, match="training-set predictions"):
        LaionTask(prior="diffusion", gallery_size=100).evaluate(ctx)


def brainbench_command() -> str:
    """The console script installed beside this interpreter (what a user runs)."""
    script = Path(sys.executable).with_name("brainbench")
    return str(script) if script.exists() else "brainbench"


@pytest.mark.slow
def test_laion_with_a_prior_end_to_end_through_the_cli(tmp_path, isolated_home):
    db = tmp_path / "mlflow.db"
    command = [
        brainbench_command(), "run", "ridge", "--task", "laion", "--dataset-opt", "scale=tiny",
        "--task-opt", "prior=diffusion", "--task-opt", "prior_opts=epochs=3,sample_timesteps=5",
        "--task-opt", "gallery_size=300", "--tracking-uri", f"sqlite:///{db}",
    ]
    env = {**os.environ, "BRAINBENCH_HOME": str(isolated_home), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "training prior 'diffusion' (quick recipe" in result.stderr
    assert "query_cosine" in result.stdout and "gt_top1" not in result.stdout  # the gallery lacks the test set
    (record_path,) = list((isolated_home / "runs").glob("*/*/laion_retrieval.json"))
    record = json.loads(record_path.read_text())
    prior = record["prior"]
    assert prior["name"] == "diffusion" and prior["budget"] == "quick"
    assert prior["options"]["epochs"] == 3 and prior["options"]["depth"] == 1  # the user's epochs, quick depth
    assert prior["fit"]["pairs"] == 300 and (record_path.parent / prior["file"]).exists()  # tiny: 300 trials
    with sqlite3.connect(db) as con:
        params = dict(con.execute("select key, value from params").fetchall())
        losses = con.execute("select step from metrics where key = 'prior_loss' order by step").fetchall()
    assert params["task.prior"] == "diffusion"
    assert [step for (step,) in losses] == [0, 1, 2]
