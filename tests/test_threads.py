"""Thread choice: the cores actually free (affinity, cgroup quota, load of others), overrides, and the record a
run leaves of what it used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from brainbench.threads import (
    THREADS_ENV,
    ThreadChoice,
    apply_threads,
    cgroup_cpu_quota,
    choose_threads,
    free_cores,
    own_recent_load,
    parse_request,
)
from tests.conftest import run_cli


def auto(**figures: float) -> int | None:
    machine = {"affinity": 2, "quota": None, "online": 2, "load": 0.0, "own_load": 0.0, "runnable": 0.0}
    return choose_threads("auto", **{**machine, **figures}).threads


def test_an_idle_machine_gets_every_core_it_may_use() -> None:
    assert auto(load=0.1) == 2
    assert auto(affinity=8, online=8, load=0.3) == 8


def test_busy_cores_are_left_to_their_owners_and_at_least_one_thread_remains() -> None:
    assert auto(load=2.0) == 1  # a neighbour burning both cores
    assert auto(load=11.0) == 1  # a crowded machine: never zero
    assert auto(affinity=8, online=8, load=3.0) == 5
    assert auto(affinity=8, online=8, load=2.6) == 5  # 5.4 free cores: a core half busy is not free


def test_a_neighbour_that_just_started_counts_before_the_load_average_sees_it() -> None:
    assert auto(load=0.0, runnable=2.0) == 1


def test_own_load_is_not_counted_as_others() -> None:
    assert auto(load=2.0, own_load=2.0) == 2  # the previous cell of this process made that load


def test_cgroup_quota_and_affinity_limit_the_cores() -> None:
    assert auto(affinity=4, online=4, quota=1.5) == 1
    assert auto(affinity=4, online=4, quota=3.0) == 3
    # a container's 4 cores on a 64-core host half busy with others: half of ours are busy too
    assert auto(affinity=4, online=64, load=32.0) == 2
    assert free_cores(available=2, online=2, others_load=-1.0) == 2


def test_cgroup_files_are_read(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(v1) == 3.0
    assert cgroup_cpu_quota(tmp_path / "missing") is None


def test_own_recent_load_measures_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import brainbench.threads as threads

    monkeypatch.setattr(threads, "_samples", [(100.0, 10.0)])
    assert own_recent_load((130.0, 40.0)) == pytest.approx(1.0)  # 30 CPU seconds in 30 s: one busy core
    assert own_recent_load((190.0, 40.0)) == pytest.approx(0.0)  # idle over the last minute


def test_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    assert choose_threads("3").threads == 3
    monkeypatch.setenv(THREADS_ENV, "default")
    assert choose_threads() == ThreadChoice(None, f"{THREADS_ENV}=default: torch/BLAS defaults")
    monkeypatch.setenv(THREADS_ENV, "2")
    assert choose_threads().threads == 2
    for bad in ("0", "-1", "many", "1.5"):
        with pytest.raises(ValueError, match="auto, default or a whole number"):
            parse_request(bad)


def test_apply_sets_torch_and_blas_threads() -> None:
    from threadpoolctl import threadpool_info

    before = torch.get_num_threads()
    try:
        assert apply_threads(ThreadChoice(1, "test")) == 1
        assert torch.get_num_threads() == 1
        assert all(pool["num_threads"] == 1 for pool in threadpool_info())
        assert apply_threads(ThreadChoice(None, "default")) == 1  # default: left as it is
    finally:
        torch.set_num_threads(before)


def test_the_cli_override_is_used_and_recorded(tmp_path: Path) -> None:
    done = run_cli("run", "ridge", "--task", "retrieval", "--dataset-opt", "scale=tiny", "--device", "cpu",
                   "--threads", "1", cwd=tmp_path, env={THREADS_ENV: ""})
    assert done.returncode == 0, done.stderr
    assert "CPU threads: 1 (BRAINBENCH_THREADS=1)" in done.stderr
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("brainbench").experiment_id])[0]
    assert run.data.params["recipe.threads"] == "1"
    assert run.data.params["recipe.threads_choice"] == "BRAINBENCH_THREADS=1"


def test_a_bad_thread_count_is_refused_before_any_work(tmp_path: Path) -> None:
    done = run_cli("run", "ridge", "--threads", "0", cwd=tmp_path)
    assert done.returncode == 2
    assert "--threads" in done.stderr and "whole number" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()
