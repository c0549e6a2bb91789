"""The target a run gets when it names none: the 257x768 tokens for Lite-Mind and MindEye on real-scale NSD
(their papers' headline), the pooled 768 on the demo-scale simulator and for ridge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from brainbench.config import RunConfig
from brainbench.plugins import get_plugins
from brainbench.runner import default_target_for, resolve
from brainbench_nsd.dataset import MindEye2Nsd
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("encoder", "synthetic", "demo_scale", "expected"),
    [
        ("litemind", False, False, "clip-vit-l-14-tokens"),  # real NSD
        ("mindeye", False, False, "clip-vit-l-14-tokens"),
        ("ridge", False, False, "clip-vit-l-14"),  # ridge's 197,376 outputs would be a 12 GB weight matrix
        ("litemind", True, False, "synthetic-clip-tokens"),  # the simulator at scale=nsd
        ("litemind", True, True, "synthetic-clip"),  # the demo-scale simulator: seconds, not hours
        ("mindeye", True, True, "synthetic-clip"),
    ],
)
def test_default_target_by_encoder_and_scale(tmp_path: Path, encoder, synthetic, demo_scale, expected):
    dataset = MindEye2Nsd(tmp_path, synthetic=synthetic)
    dataset.demo_scale = demo_scale
    assert default_target_for(get_plugins().encoders.create(encoder), dataset) == expected


def test_a_plain_run_on_the_demo_simulator_keeps_the_pooled_target():
    cell = resolve(RunConfig(encoder="litemind", task="retrieval"))
    try:
        assert cell.target_name == "synthetic-clip" and cell.target.shape == (768,)
    finally:
        cell.dataset.close()
    named = resolve(RunConfig(encoder="litemind", task="retrieval", target="synthetic-clip-tokens"))
    assert named.target_name == "synthetic-clip-tokens"  # a named target always wins
    named.dataset.close()


def test_info_says_which_target_a_plain_run_uses(tmp_path: Path):
    done = run_cli("info", "litemind", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    note = json.loads(done.stdout)["default_target"]
    assert "clip-vit-l-14-tokens" in note and "synthetic-clip" in note and "demo-scale" in note
