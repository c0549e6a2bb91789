"""The Ray launcher on a real local Ray instance (CPU): same metrics per cell as the local launcher."""

from __future__ import annotations

import os

import pytest

from tests.test_matrix_run import SPEC, metrics_by_key, run_spec, store_uri, template_store, tiny_plugin  # noqa: F401

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray(tiny_plugin):  # noqa: F811
    env = {k: os.environ[k] for k in ("PYTHONPATH", "BRAINBENCH_HOME")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    yield
    ray.shutdown()


def test_ray_cells_match_local_cells(local_ray, store_uri):  # noqa: F811
    from brainbench.records.query import children, get_run
    from brainbench.records.tracker import SafeTracker

    small = SPEC.replace('"encoder_options.alpha" = [1.0, 100.0]', '"encoder_options.alpha" = [3.0]')
    local = run_spec(small, store_uri)
    on_ray = run_spec(small, store_uri, launcher="ray", cpus_per_cell=1)
    assert (on_ray.ran, on_ray.failed, on_ray.n_cells) == (4, 0, 4)
    assert on_ray.parent_run_id != local.parent_run_id
    expected = metrics_by_key(store_uri, local.parent_run_id)
    assert len(expected) == 4 and metrics_by_key(store_uri, on_ray.parent_run_id) == expected
    tracker = SafeTracker(store_uri, "brainbench")
    runs = children(tracker, on_ray.parent_run_id)
    assert all(r.tags["brainbench.worker"].startswith("ray:") for r in runs)
    assert all(r.tags["mlflow.parentRunId"] == on_ray.parent_run_id for r in runs)
    assert get_run(tracker, on_ray.parent_run_id).tags["brainbench.launcher"] == "ray"
    # Workers ran in other processes, and the results came back to the driver.
    assert {r.tags["brainbench.worker"].rsplit(":", 1)[1] for r in runs} != {str(os.getpid())}
    assert sorted(o.key for o in on_ray.outcomes) == sorted(expected)
    assert all(o.metrics and o.status == "FINISHED" for o in on_ray.outcomes)
