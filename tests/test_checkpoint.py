"""Checkpoints: safe loading, shape checks, atomic writes, RNG states, and a real kill-and-resume run."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from brainbench.checkpoint import (
    atomic_torch_save,
    capture_rng_states,
    load_checkpoint,
    load_model_file,
    restore_rng_states,
)
from brainbench.errors import BrainbenchError, CheckpointMismatchError
from brainbench.interfaces import TrainSettings
from brainbench.training import load_fitted_encoder, train_torch_encoder
from tests.test_training import RecordingReporter, TinyEncoder, assert_same_weights, make_fit_data, weights_of

REPO = Path(__file__).resolve().parents[1]


def test_rng_states_round_trip_through_a_weights_only_file(tmp_path: Path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in Python's state
    path = atomic_torch_save({"rng": capture_rng_states()}, tmp_path / "rng.pt")
    expected = (random.random(), random.gauss(0, 1), np.random.normal(size=3), torch.rand(3))
    restore_rng_states(torch.load(path, weights_only=True)["rng"])
    again = (random.random(), random.gauss(0, 1), np.random.normal(size=3), torch.rand(3))
    assert expected[:2] == again[:2]
    assert np.array_equal(expected[2], again[2]) and torch.equal(expected[3], again[3])


def test_atomic_save_never_leaves_a_half_written_file(tmp_path: Path):
    path = atomic_torch_save({"x": torch.ones(3)}, tmp_path / "last.pt")
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        atomic_torch_save({"x": lambda: None}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.ones(3))


def test_checkpoint_is_weights_only_and_refuses_other_shapes(tmp_path: Path):
    settings = TrainSettings(epochs=2, checkpoint_dir=tmp_path)
    train_torch_encoder(TinyEncoder(), make_fit_data(), settings, RecordingReporter())
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    assert payload["epoch"] == 2 and payload["finished"] and len(payload["history"]) == 2
    assert payload["metadata"]["n_voxels"] == 20 and payload["metadata"]["target_shape"] == [3, 4]
    assert payload["metadata"]["encoder"] == "tiny"
    assert set(payload["rng"]) >= {"torch", "numpy_keys", "python_state"}
    assert "state" in payload["optimizer"] and payload["scheduler"]["step"] == 16  # 2 epochs x 128 rows / 16

    with pytest.raises(CheckpointMismatchError, match="trained on 20 voxels but the data has 21 voxels"):
        load_checkpoint(tmp_path / "last.pt", n_voxels=21)
    with pytest.raises(CheckpointMismatchError, match="shape 3x4 but the target has shape 768"):
        load_checkpoint(tmp_path / "last.pt", n_voxels=20, target_shape=(768,))
    other = make_fit_data(n_voxels=21)
    with pytest.raises(CheckpointMismatchError, match="20 voxels but the data has 21"):
        train_torch_encoder(TinyEncoder(), other, settings, RecordingReporter())


def test_resume_refuses_a_different_recipe_and_resume_off_starts_over(tmp_path: Path):
    data = make_fit_data()
    settings = TrainSettings(epochs=2, checkpoint_dir=tmp_path)
    first = train_torch_encoder(TinyEncoder(), data, settings, RecordingReporter())
    with pytest.raises(CheckpointMismatchError, match="train.base_lr: checkpoint has 0.003, this run has 0.001"):
        train_torch_encoder(TinyEncoder(), data, replace(settings, lr=1e-3), RecordingReporter())
    with pytest.raises(CheckpointMismatchError, match="encoder_params"):
        train_torch_encoder(TinyEncoder(hidden=8), data, settings, RecordingReporter())

    # a finished run resumes to the same weights without training again
    reporter = RecordingReporter()
    resumed = train_torch_encoder(TinyEncoder(), data, settings, reporter)
    assert any("resumed from" in m for m in reporter.messages)
    # nothing is trained again, and the new run's records replay the whole history
    assert [(e, m) for e, m in reporter.epochs] == [(int(h["epoch"]), {k: v for k, v in h.items() if k != "epoch"})
                                                     for h in first.history]
    assert_same_weights(weights_of(first), weights_of(resumed))
    assert resumed.history == first.history

    reporter = RecordingReporter()
    train_torch_encoder(TinyEncoder(hidden=8), data, replace(settings, resume=False), reporter)
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2]
    assert load_checkpoint(tmp_path / "last.pt")["metadata"]["encoder_params"] == '{"hidden": 8}'


def test_model_file_is_safetensors_with_metadata_and_reloads(tmp_path: Path):
    data = make_fit_data()
    fitted = train_torch_encoder(TinyEncoder(), data, TrainSettings(epochs=2), RecordingReporter())
    path = fitted.save(tmp_path)
    assert path == tmp_path / "model.safetensors"
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata()
    assert json.loads(header["n_voxels"]) == 20 and json.loads(header["target_shape"]) == [3, 4]
    assert json.loads(header["encoder"]) == "tiny" and len(json.loads(header["history"])) == 2
    sidecar = json.loads((tmp_path / "model.safetensors.json").read_text())
    assert sidecar["n_parameters"] == fitted.n_parameters

    reloaded = load_fitted_encoder(TinyEncoder(), path, device="cpu")
    assert np.array_equal(reloaded.predict(data.val_voxels), fitted.predict(data.val_voxels))
    with pytest.raises(CheckpointMismatchError, match=r"shape 3x4 but the target has shape 4x3"):
        load_model_file(path, n_voxels=20, target_shape=(4, 3))

    class Other(TinyEncoder):
        name = "other"

    with pytest.raises(CheckpointMismatchError, match="holds encoder 'tiny', not 'other'"):
        load_fitted_encoder(Other(), path, device="cpu")


RUN_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import torch

    sys.path.insert(0, {repo!r})
    torch.set_num_threads(1)
    from brainbench.interfaces import TrainSettings
    from brainbench.training import train_torch_encoder
    from tests.test_training import TinyEncoder, make_fit_data

    kill_at_step = int(os.environ.get("KILL_AT_STEP", "0"))

    class Bar:
        steps = 0
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return None
        def advance(self, n=1):
            Bar.steps += n
            if kill_at_step and Bar.steps == kill_at_step:
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, like a pre-empted job

    class Reporter:
        def epoch_end(self, epoch, metrics):
            print("epoch", epoch, flush=True)
        def progress(self, description, total):
            return Bar()
        def info(self, message):
            print(message, flush=True)

    checkpoints, output = Path(sys.argv[1]), Path(sys.argv[2])
    settings = TrainSettings(epochs=4, seed=11, checkpoint_dir=checkpoints)
    fitted = train_torch_encoder(TinyEncoder(), make_fit_data(), settings, Reporter())
    fitted.save(output)
    """
)


def _run(script: Path, checkpoints: Path, output: Path, kill_at_step: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILL_AT_STEP": str(kill_at_step)}
    return subprocess.run([sys.executable, str(script), str(checkpoints), str(output)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_run_killed_mid_epoch_resumes_to_the_same_final_weights(tmp_path: Path):
    """The run is SIGKILLed in a subprocess mid-epoch 3, then resumed here from what it left on disk."""
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT.format(repo=str(REPO)))
    steps_per_epoch = 128 // 16  # every training row, the validation images' included

    killed = _run(script, tmp_path / "parts", tmp_path / "parts.safetensors", kill_at_step=2 * steps_per_epoch + 3)
    assert killed.returncode == -9, killed.stderr  # no clean-up ran
    assert killed.stdout.split().count("epoch") == 2
    assert load_checkpoint(tmp_path / "parts" / "last.pt")["epoch"] == 2
    assert not (tmp_path / "parts.safetensors").exists()

    settings = TrainSettings(epochs=4, seed=11, checkpoint_dir=tmp_path / "parts")
    reporter = RecordingReporter()
    resumed = train_torch_encoder(TinyEncoder(), make_fit_data(), settings, reporter)
    assert any("after epoch 2 of 4" in message for message in reporter.messages)
    # the resumed run records every epoch (1-2 replayed from the checkpoint) and the time before the kill
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2, 3, 4]
    assert resumed.recipe["resumed_from_epoch"] == 2 and resumed.recipe["train_seconds_before_resume"] > 0
    assert reporter.advanced == 4 * steps_per_epoch  # the bar starts where the killed run left off

    uninterrupted = train_torch_encoder(
        TinyEncoder(), make_fit_data(), replace(settings, checkpoint_dir=None), RecordingReporter()
    )
    assert_same_weights(weights_of(uninterrupted), weights_of(resumed))
    assert resumed.history == uninterrupted.history  # same losses, accuracies and rates every epoch
    assert len(resumed.history) == 4
    file_state, _ = load_model_file(tmp_path / "parts" / "model.safetensors")
    assert_same_weights(weights_of(uninterrupted), file_state)


def test_early_stopping_without_validation_rows_is_refused():
    data = make_fit_data()
    no_val = data.without_validation()
    with pytest.raises(BrainbenchError, match="early stopping needs validation images"):
        train_torch_encoder(TinyEncoder(), no_val, TrainSettings(epochs=1, early_stopping=2), RecordingReporter())
    reporter = RecordingReporter()
    train_torch_encoder(TinyEncoder(), no_val, TrainSettings(epochs=1), reporter)
    assert set(reporter.epochs[0][1]) == {"train_loss", "lr"}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "pickled code"])
def test_a_damaged_checkpoint_is_named_with_the_way_out_and_never_unpickled(tmp_path: Path, damage: str):
    from brainbench.errors import CheckpointCorruptError

    settings = TrainSettings(epochs=1, checkpoint_dir=tmp_path)
    train_torch_encoder(TinyEncoder(), make_fit_data(), settings, RecordingReporter())
    for name in ("last.pt", "model.safetensors"):
        path = tmp_path / name
        if damage == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif damage == "garbage":
            path.write_bytes(b"\x00not a checkpoint" * 10)
        else:  # a pickle that would run code if loaded with weights_only=False
            import pickle

            path.write_bytes(pickle.dumps(print))
    with pytest.raises(CheckpointCorruptError, match=r"last\.pt is damaged.*--restart") as caught:
        load_checkpoint(tmp_path / "last.pt")
    assert "weights_only" not in str(caught.value)
    with pytest.raises(CheckpointCorruptError, match=r"model\.safetensors is damaged"):
        load_model_file(tmp_path / "model.safetensors")
    # resuming over it says so too, instead of a torch traceback
    with pytest.raises(CheckpointCorruptError, match="last.pt"):
        train_torch_encoder(TinyEncoder(), make_fit_data(), settings, RecordingReporter())


# ------------------------------------------------------------------------------------- a full disk


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_at_a_checkpoint_is_one_clear_error_and_keeps_the_last_one(tmp_path: Path, monkeypatch):
    """Writes that meet a full disk (the kernel's own ENOSPC, from /dev/full) end in one DiskFullError naming
    the folder and its free space; the last complete checkpoint is intact and no temporary file is left."""
    from brainbench import checkpoint
    from brainbench.checkpoint import DiskFullError

    path = atomic_torch_save({"epoch": torch.tensor(1)}, tmp_path / "checkpoints" / "last.pt")
    real_sibling = checkpoint._temporary_sibling

    def onto_a_full_disk(target: Path) -> Path:
        link = real_sibling(target)
        link.symlink_to("/dev/full")
        return link

    monkeypatch.setattr(checkpoint, "_temporary_sibling", onto_a_full_disk)
    with pytest.raises(DiskFullError) as full:
        atomic_torch_save({"epoch": torch.tensor(2), "weights": torch.zeros(100_000)}, path)
    message = str(full.value)
    assert message.startswith(f"no space left on the disk of {path.parent} writing the checkpoint last.pt: ")
    assert "free there" in message and "the last complete checkpoint (last.pt) is kept" in message
    assert full.value.__cause__ is None and full.value.__suppress_context__  # one error, not torch's three
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def unshare_works() -> bool:
    try:
        done = subprocess.run(["unshare", "-Urm", "true"], capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not unshare_works(), reason="needs unprivileged user namespaces (unshare -Urm) for a tmpfs")
def test_a_run_whose_disk_fills_up_says_so_in_one_line(tmp_path: Path):
    """A real full disk: the run folders on a 32 KiB tmpfs (mounted in a private mount namespace, no root)."""
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    brainbench = Path(sys.executable).with_name("brainbench")
    command = (f"mount -t tmpfs -o size=32k tmpfs {home / 'runs'} && exec {brainbench} run litemind --task "
               "retrieval --dataset-opt scale=tiny --epochs 2 --device cpu --opt patch_size=20 --opt widths=16,8,4 "
               f"--opt depths=1,1,1,1 --tracking-uri sqlite:///{tmp_path / 'mlflow.db'}")
    env = {**os.environ, "BRAINBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["unshare", "-Urm", "sh", "-c", command], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=1200)
    errors = [line for line in done.stderr.splitlines() if line.startswith(("Error", "Internal error"))]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith("Error: no space left on the disk of "), done.stderr[-3000:]
    assert "/checkpoints writing the checkpoint last.pt: " in errors[0] and "free there" in errors[0]
    assert "Traceback" not in done.stderr
