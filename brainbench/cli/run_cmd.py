"""``brainbench run``: train and evaluate one cell, or every combination of the values given."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import typer

from brainbench.cli.options import check_choice, check_launcher, parse_key_values


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        encoders: list[str] = typer.Argument(..., help="Encoder name(s), e.g. ridge litemind mindeye."),
        task: list[str] = typer.Option(["retrieval"], "--task", "-t", help="Task name (repeatable)."),
        dataset: str | None = typer.Option(
            None, "--dataset", "-d", help="Dataset name; default: the task's (the simulator when no data)."
        ),
        data_path: Path | None = typer.Option(None, "--data-path", help="Folder holding the dataset's files."),
        target: str | None = typer.Option(None, "--target", help="Target name; default: task's, else dataset's."),
        subject: list[int] = typer.Option([1], "--subject", "-s", help="Subject number (repeatable)."),
        seed: list[int] = typer.Option([0], "--seed", help="Random seed (repeatable)."),
        epochs: int | None = typer.Option(None, "--epochs", help="Training epochs (default: the encoder's)."),
        batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (default: the encoder's)."),
        lr: float | None = typer.Option(None, "--lr", help="Learning rate (default: the encoder's)."),
        device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
        precision: str = typer.Option(
            "auto", "--precision",
            help="auto (bf16 autocast on capable GPUs) | fp32 | bf16 | bf16-master (bf16 weights, fp32 master "
            "weights in the optimizer: less memory traffic for big models such as mindeye).",
        ),
        compile: str = typer.Option(
            "auto", "--compile",
            help="torch.compile the model in training: auto (on a GPU when the encoder's fast path asks, e.g. "
            "litemind impl=fast) | on | off.",
        ),
        optimizer: str = typer.Option(
            "adamw", "--optimizer",
            help="adamw (torch's; fused on CUDA) | adamw8bit (8-bit moments) | adamw8bit-bf16 (8-bit moments, bf16 "
            "weights with stochastic rounding) | adamw-bf16-states (bf16 weights and moments, stochastic rounding). "
            "The low-precision ones come from torchao (pip install 'brainbench[lowbit]'): less memory and traffic "
            "for big models such as mindeye.",
        ),
        repeats: str = typer.Option(
            "average-voxels", "--repeats", help="Test repeats: average-voxels (before the model) | average-predictions."
        ),
        val_fraction: float = typer.Option(
            0.1, "--val-fraction",
            help="Share of TRAINING images marked as validation, used only to choose (ridge's penalty, the epoch "
            "count under --early-stopping); every model is then fitted on all training images.",
        ),
        early_stopping: int | None = typer.Option(
            None, "--early-stopping",
            help="Patience in epochs (off by default): a first run picks the epoch count on the validation "
            "images, then the model trains on all training images for that many epochs.",
        ),
        checkpoint_every: int | None = typer.Option(
            None, "--checkpoint-every",
            help="Epochs between checkpoints (default: the encoder's own, e.g. 10 for MindEye's ~11 GB of state).",
        ),
        budget: str = typer.Option(
            "auto", "--budget",
            help="auto (quick recipe on demo-scale simulated data, reference recipe otherwise) | quick | reference.",
        ),
        opt: list[str] = typer.Option([], "--opt", "-o", help="Encoder option KEY=VALUE (repeatable)."),
        task_opt: list[str] = typer.Option([], "--task-opt", help="Task option KEY=VALUE (repeatable)."),
        dataset_opt: list[str] = typer.Option([], "--dataset-opt", help="Dataset option KEY=VALUE (repeatable)."),
        target_opt: list[str] = typer.Option(
            [], "--target-opt", help="Target option KEY=VALUE (repeatable), e.g. weights=/path/ViT-L-14.pt."
        ),
        tracking_uri: str | None = typer.Option(
            None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow store (default sqlite:///mlflow.db)."
        ),
        experiment: str = typer.Option("brainbench", "--experiment", help="MLflow experiment name."),
        resume: bool = typer.Option(False, "--resume", help="Continue from checkpoints / skip finished cells."),
        restart: bool = typer.Option(
            False, "--restart",
            help="Discard an interrupted training's checkpoints and start again (without it, a run refuses "
            "to start over an interrupted one: use --resume to continue it).",
        ),
        log_model: bool = typer.Option(
            False, "--log-model",
            help="Also log each trained encoder as an MLflow model: mlflow.pyfunc.load_model(\"runs:/RUN_ID/model\")"
            ".predict(voxels) gives its embeddings (see docs/compare.md). Not part of the cell key.",
        ),
        launcher: str = typer.Option("local", "--launcher", help="local | local-gpus | ray (several cells)."),
        ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address (--launcher ray)."),
        threads: str = typer.Option(
            "auto", "--threads", envvar="BRAINBENCH_THREADS",
            help="CPU threads each run computes with: auto (the cores free now: those this process may use, less "
            "the load of other processes; at least 1) | N | default (torch's and BLAS's own defaults).",
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Check every cell (options, plugins, data) and print them; run nothing."
        ),
    ) -> None:
        """Train ENCODER(s) and evaluate on TASK(s); print a results table and log to MLflow.

        Several encoders, tasks, subjects or seeds make a matrix: one MLflow parent run, a child run per cell;
        an --opt (--task-opt) then goes to the encoders (tasks) that declare it.
        """
        from brainbench.cli.preflight import check_cli_settings, preflight, spread_options
        from brainbench.config import RunConfig

        check_cli_settings(
            {"repeats": repeats, "compile": compile, "budget": budget, "val_fraction": val_fraction, "lr": lr,
             "epochs": epochs, "batch_size": batch_size, "early_stopping": early_stopping,
             "checkpoint_every": checkpoint_every, "optimizer": optimizer, "device": device, "precision": precision},
            {"subject": subject, "seed": seed},
            resume=resume, restart=restart, experiment=experiment,
        )
        from brainbench.threads import THREADS_ENV, parse_request

        try:
            parse_request(threads)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--threads") from None
        os.environ[THREADS_ENV] = threads  # read by every cell, matrix workers included (brainbench/threads.py)
        from brainbench.launch import LAUNCHERS

        check_choice(launcher, LAUNCHERS, "--launcher")  # one cell or many: a launcher that does not exist is a typo
        if len(set(encoders)) * len(set(task)) * len(set(subject)) * len(set(seed)) > 1:
            check_launcher(launcher)  # and its dependencies (ray) installed, when it will launch something
        common = dict(
            dataset=dataset,
            target=target,
            data_path=str(data_path) if data_path else None,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            device=device,
            precision=precision,
            compile=compile,
            optimizer=optimizer,
            repeats=repeats,
            val_fraction=val_fraction,
            early_stopping=early_stopping,
            checkpoint_every=checkpoint_every,
            log_model=log_model,
            budget=budget,
            dataset_options=parse_key_values(dataset_opt, "--dataset-opt"),
            target_options=parse_key_values(target_opt, "--target-opt"),
        )
        from brainbench.cli.preflight import check_names

        check_names([RunConfig(encoder=e, task=t) for e, t in itertools.product(encoders, task)])
        encoder_shares = spread_options(encoders, parse_key_values(opt, "--opt"), "encoder", "--opt ")
        task_shares = spread_options(task, parse_key_values(task_opt, "--task-opt"), "task", "--task-opt ")
        configs = [
            RunConfig(
                encoder=e, task=t, subject=s, seed=r, encoder_options=encoder_shares[e],
                task_options=task_shares[t], **common,
            )
            for e, t, s, r in itertools.product(encoders, task, subject, seed)
        ]
        # before any MLflow run exists; one cell runs here as preflight resolved it (a matrix's cells run in
        # workers, which resolve their own)
        cells = preflight(configs, keep=len(configs) == 1 and not dry_run)
        if dry_run:
            from brainbench.cli.matrix_cmd import print_cells
            from brainbench.matrix.spec import Cell

            unique = list({config.key: config for config in configs}.values())
            print_cells("command line", [Cell(config) for config in unique])
            return
        if len(configs) == 1:
            from brainbench.cli.single import run_single

            run_single(cells[0], tracking_uri, experiment, resume, restart)
        else:
            from brainbench.cli.matrix_cmd import run_configs

            run_configs(configs, tracking_uri, experiment, resume, launcher, ray_address, name=None, spec=None,
                        restart=restart)
