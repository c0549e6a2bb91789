"""brainbench.testing as a third-party package uses it: the example package passes, a broken one fails clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, pip_install_target, write_dist

BROKEN = '''
import numpy as np
from brainbench import hookimpl
from brainbench.interfaces import Encoder, FittedEncoder


class Fitted(FittedEncoder):
    n_parameters = 0

    def predict(self, voxels, batch_size=256):
        return np.zeros((len(voxels), 10), dtype=np.float32)  # forgets the target shape

    def save(self, path):
        return path


class BrokenEncoder(Encoder):
    name = "broken-encoder"

    def fit(self, data, settings, reporter):
        return Fitted()


@hookimpl
def register_encoders(register):
    register("broken-encoder", BrokenEncoder)
'''


def _pytest(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd, timeout=900,
    )


def test_example_package_passes_the_shipped_contract(tmp_path):
    site = tmp_path / "site"
    package = REPO / "plugins" / "examples" / "brainbench-knn"
    pip_install_target(package, site)
    env = {"PYTHONPATH": str(site), "BRAINBENCH_HOME": str(tmp_path / "home")}
    own = _pytest([str(package / "tests")], env, tmp_path)
    assert own.returncode == 0, own.stdout + own.stderr
    assert "7 passed" in own.stdout  # 2 k x (pooled, tokens) round trips, the round trip's own check, task, options
    shipped = _pytest(["--pyargs", "brainbench.testing", "-rs"],
                      {**env, "BRAINBENCH_CONTRACT": "brainbench-knn"}, tmp_path)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert "5 passed, 2 skipped" in shipped.stdout, shipped.stdout
    # an encoder-and-task package is told plainly what it does not provide, not "got empty parameter set"
    assert "brainbench-knn provide(s) no dataset" in shipped.stdout and "empty parameter set" not in shipped.stdout


def test_broken_plugin_fails_the_shipped_contract_with_a_clear_message(tmp_path):
    site = tmp_path / "site"
    write_dist(site, "brainbench-broken", "brainbench_broken", BROKEN, entry_name="broken")
    env = {"PYTHONPATH": str(site), "BRAINBENCH_CONTRACT": "broken", "BRAINBENCH_HOME": str(tmp_path / "home")}
    result = _pytest(["--pyargs", "brainbench.testing", "-k", "encoder_contract"], env, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("ContractError: encoder 'broken-encoder': predict() returned shape (16, 10) for 16 samples; "
            "expected (16, 768)") in result.stdout, result.stdout
