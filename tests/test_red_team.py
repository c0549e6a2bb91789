"""Issue 22's bad input, kept closed: each case refused cleanly (status 2, a message naming the bad thing, no
traceback) before an MLflow run or a run folder exists, plus Hypothesis generating more of the same kind:
plugin option values, matrix spec values and files, and HDF5 betas of any shape and dtype (written with h5py).

Most cases call the CLI's own entry point in-process (``brainbench.cli.app.main``: the same code path as the
console script, minus the process start); a handful run the installed console script, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from brainbench.cli.app import main
from brainbench.errors import BrainbenchError, DataError
from brainbench.options import OptionError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ------------------------------------------------------------------------------------------------ helpers


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err + captured.out


def assert_refused(code: int, said: str, *names: str) -> None:
    assert code == 2, said
    assert "Internal error" not in said and "Traceback" not in said, said
    for name in names:
        assert name in said, f"{name!r} not named in: {said}"


def assert_nothing_created(work: Path, home: Path) -> None:
    """Bad input leaves no MLflow store (so no FAILED run) and no run folder behind."""
    assert not (work / "mlflow.db").exists(), "an MLflow store was created for bad input"
    runs = home / "runs"
    assert not runs.exists() or not any(runs.rglob("*")), f"run folders left: {list(runs.rglob('*'))[:3]}"


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


N_VOXELS, N_IMAGES = 24, 60


def write_nsd(root: Path, betas: object = None, table: bytes | None = None, pooled: np.ndarray | None = None) -> Path:
    """A MindEye2-layout NSD folder written with h5py: betas, a trial table (CSV) and pooled targets.

    ``betas``: an array, or a callable(h5py.File) writing ``betas`` itself; default: fine random betas."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = np.repeat(np.arange(N_IMAGES), 2)
    with h5py.File(root / "betas_all_subj01_fp32_renorm.hdf5", "w") as f:
        if callable(betas):
            betas(f)
        else:
            default = rng.normal(size=(len(images), N_VOXELS)).astype(np.float32)
            f.create_dataset("betas", data=default if betas is None else betas)
    if table is None:
        lines = [f"{img},{t},1,{'train' if img < 40 else 'test'}" for t, img in enumerate(images)]
        table = ("image_index,trial_index,session,split\n" + "\n".join(lines) + "\n").encode()
    (root / "trials_subj01.csv").write_bytes(table)
    with h5py.File(root / "clip_targets.hdf5", "w") as f:
        default = rng.normal(size=(N_IMAGES, 768)).astype(np.float32)
        f.create_dataset("pooled", data=default if pooled is None else pooled)
    return root


NSD = ["run", "ridge", "--dataset", "nsd", "--target", "synthetic-clip", "--data-path"]


# ------------------------------------------------------------------------- the cases, one by one

CLI_CASES = [
    (["run", "ridge", "--seed", "-1"], ("--seed", "-1")),
    (["run", "ridge", "--seed", str(2**70)], ("--seed", str(2**70), "4294967295")),
    (["run", "ridge", "--seed", str(2**32)], ("--seed",)),  # would alias seed 0 in numpy's legacy generator
    (["run", "ridge", "--launcher", "bogus"], ("--launcher", "bogus")),
    (["run", "litemind", "--opt", "pad=zero", "--opt", "pad=drop"], ("pad=zero", "pad=drop", "twice")),
    (["run", "ridge", "--experiment", ""], ("--experiment",)),
    (["run", "ridge", "--resume", "--restart"], ("--resume", "--restart")),
    (["run", "litemind", "--epochs", str(10**12)], ("--epochs",)),
    (["run", "litemind", "--batch-size", str(10**12)], ("--batch-size",)),
    (["run", "ridge", "--subject", str(2**70)], ("--subject",)),
    (["run", "mindeye", "--opt", "blocks=1000000"], ("blocks",)),
    (["run", "ridge", "--task-opt", "draws=1000000000000"], ("draws",)),
    (["run", "ridge", "--dataset-opt", f"seed={2**40}"], ("seed",)),
    (["matrix", "run", "spec.toml", "--workers", "0"], ("--workers",)),
]


@pytest.mark.parametrize("argv, names", CLI_CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else "")
def test_bad_flag_is_refused_before_any_run(argv, names, work, isolated_home, capsys):
    (work / "spec.toml").write_text('name = "x"\n[defaults]\nencoder = "ridge"\ntask = "retrieval"\n')
    code, said = run_main(argv, capsys)
    assert_refused(code, said, *names)
    assert_nothing_created(work, isolated_home)


def test_a_model_too_big_for_the_machine_is_refused_with_its_size(work, isolated_home, capsys):
    code, said = run_main(["run", "litemind", "--opt", "widths=1000000,64,32", "--opt", "patch_size=16",
                           "--dataset-opt", "scale=tiny"], capsys)
    assert_refused(code, said, "litemind", "parameters", "widths=")
    assert "bytes per parameter" in said and "RAM" in said
    assert_nothing_created(work, isolated_home)


def test_an_encoder_that_cannot_be_built_on_the_data_is_refused_before_the_run(work, isolated_home, capsys):
    # Lite-Mind's 450-voxel patches on the tiny simulator's 245 voxels: was "Internal error" 25 s into a run
    code, said = run_main(["run", "litemind", "--dataset-opt", "scale=tiny", "--budget", "reference"], capsys)
    assert_refused(code, said, "litemind cannot be built", "voxels", "patch")
    assert_nothing_created(work, isolated_home)


def test_a_gallery_bigger_than_the_disk_is_refused_with_the_numbers(work, isolated_home, capsys):
    code, said = run_main(["run", "ridge", "--task", "laion", "--task-opt", f"gallery_size={10**10}"], capsys)
    assert_refused(code, said, "gallery_size", "free")
    assert not (isolated_home / "laion").exists()  # nothing written
    assert_nothing_created(work, isolated_home)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_refused_before_data_are_simulated(work, isolated_home, capsys):
    code, said = run_main(["run", "ridge", "--device", "cuda"], capsys)
    assert_refused(code, said, "--device cuda", "CUDA is not available")
    assert not (isolated_home / "synthetic").exists()  # refused before the simulator wrote anything
    assert_nothing_created(work, isolated_home)


def _group(f):
    f.create_group("betas").create_dataset("x", data=np.zeros(3))


def _missing_external(f):
    f["betas"] = h5py.ExternalLink("/nonexistent/elsewhere.hdf5", "/betas")


def _huge():
    values = np.random.default_rng(1).normal(size=(120, N_VOXELS)).astype(np.float32)
    values[::2] = 3e38
    values[1::2] = -3e38
    return values


DATA_CASES = {
    "zero rows": (dict(betas=np.zeros((0, N_VOXELS), np.float32)), ("betas", "no trials")),
    "zero voxels": (dict(betas=np.zeros((120, 0), np.float32)), ("betas", "no voxels")),
    "betas a group": (dict(betas=_group), ("'betas' is an HDF5 group",)),
    "external link to a missing file": (dict(betas=_missing_external), ("external link", "elsewhere.hdf5")),
    "+-3e38 betas": (dict(betas=_huge()), ("betas", "row 0", "overflow")),
    "all-zero betas": (dict(betas=np.zeros((120, N_VOXELS), np.float32)), ("betas", "all zero")),
    "binary trial table": (dict(table=bytes(range(256)) * 8), ("trials_subj01.csv", "binary")),
    "utf-16 trial table": (dict(table="image_index,trial_index,session,split\n0,0,1,train\n".encode("utf-16")),
                           ("trials_subj01.csv", "UTF-16")),
    "negative trial_index": (dict(table=b"image_index,trial_index,session,split\n0,-3,1,train\n1,1,1,test\n"),
                             ("trials_subj01.csv", "line 2", "trial_index -3")),
    "negative image_index": (dict(table=b"image_index,trial_index,session,split\n-1,0,1,train\n1,1,1,test\n"),
                             ("trials_subj01.csv", "line 2", "image_index -1")),
    "NaN target embeddings": (dict(pooled=np.full((N_IMAGES, 768), np.nan, np.float32)),
                              ("stored 'clip-pooled' embedding", "NaN")),
    "trial_index 2**70": (dict(table=f"image_index,trial_index,session,split\n0,{2**70},1,train\n".encode()),
                          ("trials_subj01.csv", "trial_index")),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_nsd_data_is_refused_before_any_run(case, work, isolated_home, tmp_path, capsys):
    layout, names = DATA_CASES[case]
    root = write_nsd(tmp_path / "nsd", **layout)
    code, said = run_main([*NSD, str(root)], capsys)
    assert_refused(code, said, *names)
    assert_nothing_created(work, isolated_home)


def test_good_nsd_folder_runs(work, tmp_path, capsys):
    """The fixture itself is fine: the refusals above are about what each case changed."""
    root = write_nsd(tmp_path / "nsd")
    code, said = run_main([*NSD, str(root), "--dry-run"], capsys)
    assert code == 0, said


SPEC = 'name = "x"\n[defaults]\ntask = "retrieval"\n'
SPEC_CASES = {
    "binary": (bytes(range(256)) * 4, ("spec.toml", "binary")),
    "utf-16": ((SPEC + 'encoder = "ridge"\n').encode("utf-16"), ("spec.toml", "UTF-16")),
    "table as an axis value": ((SPEC + '[axes]\nencoder = [{ name = "ridge" }]\n').encode(), ("encoder", "table")),
    "text seed": ((SPEC + 'encoder = "ridge"\n[axes]\nseed = ["x"]\n').encode(), ("seed='x'",)),
    "encoder and encoders": ((SPEC + '[axes]\nencoder = ["ridge"]\nencoders = ["litemind"]\n').encode(),
                             ("'encoder' and 'encoders'",)),
    "override matching nothing": (
        (SPEC + 'encoder = "ridge"\n[[overrides]]\nmatch = { encoder = "ridgee" }\nset = { epochs = 3 }\n').encode(),
        ("overrides]] #1", "ridgee", "matches no cell", '"ridge"'),
    ),
    "a million cells": (
        (SPEC + 'encoder = "ridge"\n[axes]\nseed = [' + ", ".join(map(str, range(1000))) + "]\n"
         + '"encoder_options.alpha" = [' + ", ".join(f"{a}.0" for a in range(1, 1001)) + "]\n").encode(),
        ("1,000,000 cells", "10,000"),
    ),
}


@pytest.mark.parametrize("case", list(SPEC_CASES))
def test_bad_matrix_spec_is_refused_in_its_dry_run(case, work, isolated_home, capsys):
    text, names = SPEC_CASES[case]
    (work / "spec.toml").write_bytes(text)
    code, said = run_main(["matrix", "run", "spec.toml", "--dry-run"], capsys)
    assert_refused(code, said, *names)
    assert_nothing_created(work, isolated_home)


def test_object_array_ridge_checkpoint_is_named_not_loaded(tmp_path):
    from brainbench.errors import CheckpointCorruptError
    from brainbench_ridge.encoder import FittedRidge

    objects = np.empty(2, dtype=object)
    objects[:] = [{"a": 1}, None]
    path = tmp_path / "model.npz"
    np.savez(path, weights=objects, bias=objects, voxel_mean=objects, voxel_scale=objects, target_shape=objects,
             alpha=objects)
    with pytest.raises(CheckpointCorruptError, match=r"model\.npz holds object arrays"):
        FittedRidge.load(path)


def test_index_build_into_a_file_is_refused(tmp_path):
    from brainbench_laion.index import build_index

    out = tmp_path / "taken"
    out.write_text("a file")
    with pytest.raises(DataError, match="exists and is a file"):
        build_index(tmp_path, out)


# ------------------------------------------------------------------------------------------ generated


def _declared() -> list[tuple[str, str, object]]:
    from brainbench.plugins import get_plugins, reset_plugins

    reset_plugins()
    plugins = get_plugins()
    found = []
    for kind in ("encoder", "task", "dataset", "target"):
        registry = plugins.registry(kind)
        for name in registry.names():
            declared = registry.entry(name).declared_options()
            for option in declared or ():
                found.append((kind, name, option))
    return found


DECLARED = _declared()
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.one_of(st.integers(min_value=-(10**15), max_value=10**15), st.text(max_size=4)), max_size=4),
    st.sampled_from(["1e999", "nan", "-1", "0", "1000000000000", "1,2,3", "", "none", "true"]),
)


@FUZZ
@given(which=st.sampled_from(DECLARED), value=VALUES)
def test_any_value_of_any_declared_option_is_taken_or_refused_by_name(which, value):
    """Every registered plugin's declared options: a value is coerced, or refused in an OptionError naming the
    option; no other exception, and an accepted number respects the declared bounds."""
    kind, plugin, option = which
    from brainbench.plugins import get_plugins

    entry = get_plugins().registry(kind).entry(plugin)
    try:
        accepted = entry.check_options({option.name: value}, "--opt ")
    except OptionError as exc:
        assert option.name in str(exc)
        return
    taken = accepted[option.name]
    numbers = taken if isinstance(taken, list) else [taken]
    for number in numbers:
        if isinstance(number, int | float) and not isinstance(number, bool):
            assert option.minimum is None or number >= option.minimum
            assert option.maximum is None or number <= option.maximum
            assert np.isfinite(number) or not option.finite


CLI_OPTIONS = [(plugin, option) for kind, plugin, option in DECLARED
               if kind == "encoder" and plugin in ("ridge", "mindeye")]
CLI_TEXT = st.one_of(st.sampled_from(["-1", "0", "1e999", "nan", "1000000000000", "a,b", "", "{}", "[1]", "true"]),
                     st.integers(min_value=-(2**70), max_value=2**70).map(str), st.text(max_size=6))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(CLI_OPTIONS), text=CLI_TEXT)
def test_any_opt_text_on_the_command_line_runs_or_is_refused_naming_it(which, text, work, isolated_home, capsys):
    """``brainbench run ENCODER --opt NAME=TEXT --dry-run`` (the CLI's entry point, in-process): status 0, or 2
    with the option named; never an internal error, and never an MLflow store or run folder."""
    plugin, option = which
    code, said = run_main(["run", plugin, "--opt", f"{option.name}={text}", "--dataset-opt", "scale=tiny",
                           "--dry-run"], capsys)
    assert code in (0, 2), said
    assert "Internal error" not in said and "Traceback" not in said, said
    if code == 2:
        assert option.name in said or "--opt" in said, said
    assert_nothing_created(work, isolated_home)


SCALARS = st.one_of(st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
SPEC_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=3), SCALARS,
                                                                                max_size=2))
SPEC_KEYS = st.sampled_from(["seed", "seeds", "subject", "epochs", "batch_size", "lr", "device", "repeats",
                             "val_fraction", "encoder", "encoders", "task", "data_path", "log_model", "budget",
                             "encoder_options.alpha", "dataset_options.scale", "checkpoint_every", "bogus"])


def _toml(value: object) -> str:
    import json
    import math

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"  # type: ignore[union-attr]


@FUZZ
@given(defaults=st.dictionaries(SPEC_KEYS, SPEC_VALUES, max_size=3),
       axes=st.dictionaries(SPEC_KEYS, SPEC_VALUES, max_size=3))
def test_any_spec_values_expand_to_valid_cells_or_a_data_error(defaults, axes):
    """Generated [defaults] and [axes]: the spec expands to cells whose settings all pass their declarations,
    or is refused with a DataError naming the spec; never another exception."""
    import tomllib

    from brainbench.config import setting_problems
    from brainbench.matrix.spec import expand, parse_spec

    def key(name: str) -> str:
        return f'"{name}"' if "." in name else name

    lines = ['name = "fuzz"', "[defaults]", 'task = "retrieval"', 'encoder = "ridge"']
    lines += [f"{key(k)} = {_toml(v)}" for k, v in defaults.items() if k not in ("task", "encoder")]
    lines += ["[axes]"] + [f"{key(k)} = {_toml(v)}" for k, v in axes.items()]
    text = "\n".join(lines) + "\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        assume(False)
    try:
        cells = expand(parse_spec(text, "fuzz.toml"))
    except DataError as exc:
        assert "fuzz.toml" in str(exc)
        return
    for cell in cells:
        assert setting_problems(cell.config.to_dict()) == []


@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes_as_a_spec_file_are_read_or_refused_by_name(raw, tmp_path):
    from brainbench.matrix.spec import expand, load_spec

    path = tmp_path / "bytes.toml"
    path.write_bytes(raw)
    try:
        expand(load_spec(path))
    except DataError as exc:
        assert "bytes.toml" in str(exc)


DTYPES = st.sampled_from(["f4", "f8", "f2", "i2", "u1", "c8", "?", "S3"])
SHAPES = st.lists(st.integers(min_value=0, max_value=6), min_size=0, max_size=3).map(tuple)
FILL = st.sampled_from(["normal", "zero", "nan", "inf", "huge", "constant"])


@FUZZ
@given(shape=SHAPES, dtype=DTYPES, fill=FILL, rows=st.integers(min_value=0, max_value=130))
def test_any_hdf5_betas_are_read_or_refused_naming_the_file(shape, dtype, fill, rows, tmp_path_factory):
    """Betas of any shape, dtype and values (h5py writes them): the cell's data check returns the voxel count
    only for a 2-D numeric, finite, non-constant array; otherwise a DataError names the betas file."""
    from brainbench.data_checks import check_cell_data
    from brainbench_nsd.dataset import open_nsd

    if len(shape) == 2:
        shape = (rows, shape[1])  # enough rows, sometimes, for the trial table's 120 trials
    values = np.random.default_rng(0).normal(size=shape)
    values = {"normal": values, "zero": np.zeros(shape), "nan": np.where(values > 0, np.nan, values),
              "inf": np.where(values > 0, np.inf, values), "huge": values * 1e30,
              "constant": np.full(shape, 5.0)}[fill]
    root = tmp_path_factory.mktemp("nsd")
    with np.errstate(over="ignore", invalid="ignore"):  # nan/huge cast to integers: garbage is the point
        data = values.astype("S3") if dtype == "S3" else values.astype(dtype)
    write_nsd(root, betas=data)
    dataset = open_nsd(root)
    try:
        n_voxels = check_cell_data(dataset, "nsd", 1)
    except DataError as exc:
        assert "betas_all_subj01_fp32_renorm.hdf5" in str(exc) or "trials_subj01.csv" in str(exc) or "nsd" in str(
            exc), str(exc)
        return
    finally:
        dataset.close()
    assert len(shape) == 2 and shape[0] >= 120 and shape[1] > 0
    assert np.issubdtype(np.dtype(dtype), np.floating) and fill == "normal"
    assert n_voxels == shape[1]


# ------------------------------------------------------------------------ what a user sees (subprocess)


def console(args: list[str], cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BRAINBENCH_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    script = Path(sys.executable).with_name("brainbench")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "brainbench.cli.app"]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_console_script_refuses_bad_betas_with_no_store_and_no_run_folder(tmp_path):
    root = write_nsd(tmp_path / "nsd", betas=np.zeros((120, N_VOXELS), np.float32))
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    done = console([*NSD, str(root)], work, home)
    said = done.stderr + done.stdout
    assert_refused(done.returncode, said, "betas_all_subj01_fp32_renorm.hdf5", "all zero")
    assert_nothing_created(work, home)


def test_console_script_refuses_a_seed_the_generators_cannot_take(tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    done = console(["run", "ridge", "--seed", str(2**70)], work, home)
    assert_refused(done.returncode, done.stderr + done.stdout, "--seed", "4294967295")
    assert_nothing_created(work, home)


def test_console_script_refuses_a_binary_spec(tmp_path):
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    (work / "spec.toml").write_bytes(bytes(range(256)))
    done = console(["matrix", "run", "spec.toml"], work, home)
    assert_refused(done.returncode, done.stderr + done.stdout, "spec.toml", "binary")
    assert_nothing_created(work, home)


def test_red_team_catalogue_lists_every_item():
    """benchmarks/red_team.py (the before/after counts) knows probes for each of the issue's items."""
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "benchmarks" / "red_team.py"),
                           "--brainbench", sys.executable, "--list"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    items = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert {"1", "2", "3", "4", "6", "7", "8"} <= items
    assert len(done.stdout.splitlines()) >= 150


def test_brainbench_error_is_what_preflight_raises():
    """The checks raise the project's user-error type (exit 2), never a bare ValueError."""
    from brainbench.cli.preflight import check_cli_settings

    with pytest.raises(BrainbenchError):
        check_cli_settings({"epochs": 0}, {"seed": [-1]})
