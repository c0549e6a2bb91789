"""``--log-model``: a run's fitted encoder as an MLflow model that MLflow's own loader serves.

``mlflow.pyfunc.load_model("runs:/<run_id>/model").predict(voxels)`` returns the encoder's predictions for
float32 voxels (n, n_voxels) as (n, *target_shape). The model is logged as "models from code": its code is
:mod:`brainbench.records.mlflow_pyfunc`, copied into the model's folder, its artifacts the run's checkpoint
(safetensors or a plain ``.npz``) and a JSON note naming the encoder and options. Nothing is pickled, and the
weights are read with the same safe loaders ``--resume`` uses.

But loading does run code from the model's folder: MLflow executes the folder's copy of ``mlflow_pyfunc.py``
(and reads its ``MLmodel`` to know what to run). Whoever can change the folder can make a plain
``mlflow.pyfunc.load_model`` run their code. So at log time the SHA-256 of every file of the model is recorded
in the store, on the logged model (tag ``brainbench.files_sha256``; the code file's alone in
``brainbench.code_sha256``), and :func:`load_model` checks the downloaded files against it before MLflow
runs anything: a changed, added or missing file is refused, naming it.

mlflow is imported lazily (this module is reached from the runner only when ``log_model`` is set).
"""

from __future__ import annotations

import importlib
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from brainbench.errors import DataError, one_line
from brainbench.interfaces import FittedEncoder

#: The model's name in the run ("runs:/<run_id>/model") and in the UI's Models column.
MODEL_NAME = "model"
#: Artifact keys inside the MLflow model.
SPEC_ARTIFACT = "brainbench_model"
CHECKPOINT_ARTIFACT = "checkpoint"
SIDECAR_ARTIFACT = "checkpoint_sidecar"
#: The trained encoder's own predictions for the input example (``.npy``), made in the run before any
#: reload: what the loaded model must reproduce.
EXAMPLE_PREDICTIONS_ARTIFACT = "example_predictions"
#: The run tag holding the model's URI (``models:/<model_id>``), read back by the CLI.
MODEL_URI_TAG = "brainbench.model_uri"
#: Rows of the run's test voxels kept as the model's input example.
EXAMPLE_ROWS = 2
#: Logged-model tags: the SHA-256 of every file of the model ({path: hex}, JSON) and of its code file.
FILES_SHA256_TAG = "brainbench.files_sha256"
CODE_SHA256_TAG = "brainbench.code_sha256"
CODE_FILE = "mlflow_pyfunc.py"
#: Written by MLflow itself into a model it downloads (overwritten, plain YAML data): not one of the model's files.
DOWNLOAD_NOTES = ("registered_model_meta",)


class ModelIntegrityError(DataError):
    """A logged model whose files are not those that were logged; it is not loaded."""


def model_spec(fitted: Any, checkpoint: Path, work_dir: Path) -> dict[str, Any]:
    """What a loader needs to rebuild ``fitted``: the encoder plugin and the options it was created with
    (from the run's config.json, quick-recipe options included), shapes, and the fitted class for encoders
    that are not torch modules (ridge, knn: their class's ``load`` reads the checkpoint)."""
    resolved = json.loads((work_dir / "config.json").read_text())["config"]
    n_voxels, target_shape = fitted_shapes(fitted, checkpoint)
    return {
        "format": 1,
        "encoder": resolved["encoder"],
        "encoder_options": resolved.get("encoder_options") or {},
        "precision": resolved.get("precision", "auto"),
        "n_voxels": n_voxels,
        "target_shape": list(target_shape),
        "fitted_class": f"{type(fitted).__module__}:{type(fitted).__qualname__}",
        "checkpoint": checkpoint.name,
    }


def fitted_shapes(fitted: FittedEncoder, checkpoint: Path) -> tuple[int, tuple[int, ...]]:
    """(n_voxels, target_shape) of a fitted encoder: the attributes every FittedEncoder sets."""
    try:
        return int(fitted.n_voxels), tuple(int(s) for s in fitted.target_shape)
    except AttributeError:
        raise DataError(
            f"cannot log {type(fitted).__name__} as an MLflow model: it sets no n_voxels/target_shape "
            "(attributes every brainbench.interfaces.FittedEncoder sets)"
        ) from None


def load_fitted(spec: dict[str, Any], checkpoint: Path, device: str = "auto", precision: str | None = None) -> Any:
    """The fitted encoder ``spec`` describes, rebuilt from ``checkpoint`` by its class's ``load`` (safe loaders
    only: safetensors or weights_only torch files, ``allow_pickle=False`` npz)."""
    from brainbench.plugins import get_plugins

    encoder = get_plugins().encoders.create(spec["encoder"], **spec["encoder_options"])
    module_name, _, qualname = str(spec["fitted_class"]).partition(":")
    # Only a class from brainbench or the encoder plugin's own package is imported (the one that fitted it).
    packages = {"brainbench", type(encoder).__module__.split(".")[0]}
    if module_name.split(".")[0] not in packages:
        raise DataError(
            f"model {checkpoint}: fitted class {spec['fitted_class']!r} is not from brainbench or encoder "
            f"{spec['encoder']!r}'s package {type(encoder).__module__.split('.')[0]!r}"
        )
    cls: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    if not (isinstance(cls, type) and issubclass(cls, FittedEncoder)):
        raise DataError(f"model {checkpoint}: {spec['fitted_class']!r} is not a brainbench FittedEncoder")
    return cls.load(checkpoint, encoder=encoder, n_voxels=int(spec["n_voxels"]),
                    target_shape=tuple(int(s) for s in spec["target_shape"]), device=device,
                    precision=precision or spec["precision"])


def pip_requirements() -> list[str]:
    """What the model needs installed: brainbench (its plugins included) and the libraries it loads with."""
    from importlib.metadata import PackageNotFoundError, version

    from brainbench import __version__

    requirements = [f"brainbench=={__version__}"]
    for name in ("torch", "numpy", "safetensors"):
        try:
            requirements.append(f"{name}=={version(name).split('+', 1)[0]}")  # no local tag (+cu130)
        except PackageNotFoundError:
            continue
    return requirements


def signature(n_voxels: int, target_shape: tuple[int, ...]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        # unnamed: predict gets the array itself, not a {name: array} dict
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, n_voxels))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *target_shape))]),
    )


def log_encoder_model(
    record: Any, fitted: Any, checkpoint: Path, work_dir: Path, example: np.ndarray | None = None,
    spec: dict[str, Any] | None = None,
) -> str:
    """Log ``fitted`` (saved at ``checkpoint``) as the MLflow model ``model`` of ``record``'s run; returns
    its ``models:/<model_id>`` URI (``runs:/<run_id>/model`` names it too).

    Goes through the run's own client (RunRecord has no model method; the fluent ``mlflow.pyfunc.log_model``
    reads the process-wide tracking URI and experiment, and could start a second run): a LoggedModel is
    created with the run as its source, the pyfunc folder saved locally and uploaded, the run's outputs
    linked (the UI's Models column), and the model marked READY.
    """
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in the run's output
    import mlflow.pyfunc
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    client, run_id = record._client, record.run_id
    spec = spec or model_spec(fitted, checkpoint, work_dir)
    run = client.get_run(run_id)
    keep = ("encoder", "task", "dataset", "target", "subject", "seed", "cell_key", "n_voxels")
    params = {key: run.data.params[key] for key in keep if key in run.data.params}
    model = client.create_logged_model(
        run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id, params=params,
        tags={"brainbench.encoder": spec["encoder"]}, model_type="brainbench-encoder",
    )
    try:
        with tempfile.TemporaryDirectory() as folder:
            spec_path = Path(folder) / "brainbench_model.json"
            spec_path.write_text(json.dumps(spec, indent=2) + "\n")
            artifacts = {SPEC_ARTIFACT: str(spec_path), CHECKPOINT_ARTIFACT: str(checkpoint)}
            sidecar = Path(str(checkpoint) + ".json")
            if sidecar.exists():
                artifacts[SIDECAR_ARTIFACT] = str(sidecar)
            if example is not None:
                example = np.ascontiguousarray(example[:EXAMPLE_ROWS], dtype=np.float32)
                np.save(Path(folder) / "example_predictions.npy", np.asarray(fitted.predict(example), np.float32))
                artifacts[EXAMPLE_PREDICTIONS_ARTIFACT] = str(Path(folder) / "example_predictions.npy")
            local = Path(folder) / MODEL_NAME
            mlflow.pyfunc.save_model(
                path=str(local),
                python_model=str(Path(__file__).with_name("mlflow_pyfunc.py")),  # models from code
                artifacts=artifacts,
                signature=signature(spec["n_voxels"], tuple(spec["target_shape"])),
                input_example=example,
                pip_requirements=pip_requirements(),
                metadata={"brainbench_encoder": spec["encoder"], "cell_key": params.get("cell_key")},
                mlflow_model=Model(
                    artifact_path=model.artifact_location, run_id=run_id, model_uuid=model.model_id,
                    model_id=model.model_id,
                ),
            )
            digests = files_sha256(local)
            client.log_model_artifacts(model.model_id, str(local))
        client.set_logged_model_tags(model.model_id, {
            FILES_SHA256_TAG: json.dumps(digests, sort_keys=True), CODE_SHA256_TAG: digests[CODE_FILE],
        })
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    uri = f"models:/{model.model_id}"
    client.set_tag(run_id, MODEL_URI_TAG, uri)
    return uri


def log_model_or_warn(
    record: Any, fitted: Any, checkpoint: Path, work_dir: Path, example: np.ndarray | None, reporter: Any | None
) -> str | None:
    """:func:`log_encoder_model`, saying where the model is; a model that cannot be logged (the store went
    offline, an encoder without a loader) is a warning, not a failed run: the results and the checkpoint
    artifact are logged already."""
    say = reporter.info if reporter is not None else print
    if not getattr(record, "offline", False):
        try:
            uri = log_encoder_model(record, fitted, checkpoint, work_dir, example)
        except Exception as exc:  # mlflow raises many types; the run's results are safe
            if not hasattr(record, "defer_model") or isinstance(exc, DataError):  # not the store's fault
                said = one_line(exc)
                say(f"[yellow]warning:[/yellow] could not log the model: {type(exc).__name__}: {said}")
                try:
                    record.set_tags({"brainbench.model_error": f"{type(exc).__name__}: {said}"})
                except Exception:  # the store itself is what failed
                    pass
                return None
            record.go_offline(exc)  # the store failed: the model waits in the journal like every record
        else:
            say(load_hint(record.run_id, uri))
            return uri
    # a journaled run whose store went away (records/journal.py): `brainbench log` logs the model later
    record.defer_model(model_spec(fitted, checkpoint, work_dir), checkpoint, example)
    say(f"the MLflow store is offline: `brainbench log {work_dir}` will log the model with the run's records")
    return None


def log_deferred_model(record: Any, checkpoint: Path, spec_path: Path, example_path: Path | None) -> str:
    """A model written down while the store was offline (records/journal.py), logged now: rebuilt from the run
    folder's checkpoint with the safe loaders, on the CPU."""
    spec = json.loads(spec_path.read_text())
    fitted = load_fitted(spec, checkpoint, device="cpu")
    example = np.load(example_path, allow_pickle=False) if example_path is not None else None
    return log_encoder_model(record, fitted, checkpoint, checkpoint.parent, example, spec=spec)


def load_hint(run_id: str, uri: str) -> str:
    """One line telling a user how to load a logged model."""
    return (
        f'MLflow model {uri} (also runs:/{run_id}/{MODEL_NAME}): mlflow.pyfunc.load_model("runs:/{run_id}/'
        f'{MODEL_NAME}").predict(voxels) takes float32 voxels (n, n_voxels); brainbench.records.model.load_model '
        "loads it after checking its files"
    )


# ------------------------------------------------------------------------------------ checked loading


def files_sha256(folder: Path) -> dict[str, str]:
    """{path relative to ``folder``: SHA-256} of every file under it (links are refused: never followed)."""
    import hashlib

    digests = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ModelIntegrityError(f"model folder {folder}: {path.relative_to(folder)} is a link")
        if path.is_file():
            digest = hashlib.sha256()
            with open(path, "rb") as handle:
                for block in iter(lambda: handle.read(2**20), b""):
                    digest.update(block)
            digests[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return digests


def _model_id(client: Any, model_uri: str, local: Path) -> str:
    """The logged model a URI names: ``models:/<id>``, ``runs:/<run>/model`` (the run's model tag), else the
    id its MLmodel file gives (whose recorded hashes must then match every file)."""
    if model_uri.startswith("models:/"):
        return model_uri.removeprefix("models:/").strip("/")
    if model_uri.startswith("runs:/"):
        run_id = model_uri.removeprefix("runs:/").split("/", 1)[0]
        tag = client.get_run(run_id).data.tags.get(MODEL_URI_TAG, "")
        if tag.startswith("models:/"):
            return tag.removeprefix("models:/")
    from mlflow.models import Model

    model_id = Model.load(str(local)).model_id
    if not model_id:
        raise ModelIntegrityError(f"model {model_uri}: its MLmodel names no logged model to check it against")
    return str(model_id)


def integrity_problems(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    """What differs between the files recorded at log time and those found, one line each."""
    problems = [f"{name} was changed (sha256 {actual[name][:12]}..., logged {digest[:12]}...)"
                for name, digest in sorted(expected.items()) if name in actual and actual[name] != digest]
    problems += [f"{name} is missing" for name in sorted(expected.keys() - actual.keys())]
    problems += [f"{name} was added" for name in sorted(actual.keys() - expected.keys())]
    return problems


def load_model(model_uri: str, tracking_uri: str | None = None, model_config: dict[str, Any] | None = None) -> Any:
    """``mlflow.pyfunc.load_model(model_uri)`` for a brainbench model, once every file of it is checked against
    the SHA-256 recorded in the store when it was logged: MLflow runs the model folder's ``mlflow_pyfunc.py``
    on load, so a changed file (or an added or missing one) is refused with ModelIntegrityError, naming it,
    before MLflow runs anything. The files checked are the files loaded (one download, into a temporary
    folder)."""
    import mlflow

    before = mlflow.get_tracking_uri()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)  # runs:/ and models:/ resolve through the process-wide store
    try:
        client = mlflow.MlflowClient()
        with tempfile.TemporaryDirectory() as folder:
            local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=folder))
            model_id = _model_id(client, model_uri, local)
            recorded = client.get_logged_model(model_id).tags.get(FILES_SHA256_TAG)
            if not recorded:
                raise ModelIntegrityError(
                    f"model {model_uri} ({model_id}) has no recorded file hashes ({FILES_SHA256_TAG}): it was not "
                    "logged by a brainbench that records them, and it is not loaded unchecked"
                )
            found = {name: digest for name, digest in files_sha256(local).items() if name not in DOWNLOAD_NOTES}
            problems = integrity_problems(json.loads(recorded), found)
            if problems:
                raise ModelIntegrityError(
                    f"model {model_uri} ({model_id}) is not what was logged: {'; '.join(problems)}. MLflow runs "
                    f"the model folder's {CODE_FILE} when it loads a model, so a changed model is not loaded"
                )
            return mlflow.pyfunc.load_model(str(local), model_config=model_config)
    finally:
        if tracking_uri:
            mlflow.set_tracking_uri(before)
