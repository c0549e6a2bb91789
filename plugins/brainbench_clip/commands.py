"""``brainbench targets ...``: build the embedding caches training reads instead of re-encoding images."""

from __future__ import annotations

from pathlib import Path

import typer

targets_app = typer.Typer(help="Target embeddings: build the on-disk caches of CLIP embeddings.", no_args_is_help=True)


@targets_app.command("build")
def build(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset name (see `brainbench list`)."),
    data_path: Path | None = typer.Option(None, "--data-path", help="Where the dataset lives on disk."),
    target: str = typer.Option("clip-vit-l-14", "--target", "-t", help="clip-vit-l-14 or clip-vit-l-14-tokens."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", min=1, help="Images encoded per chunk."),
    out: Path | None = typer.Option(None, "--out", help="Cache folder (default: $BRAINBENCH_HOME/targets)."),
    weights: str | None = typer.Option(
        None, "--weights", help="CLIP weights file (else $BRAINBENCH_CLIP_WEIGHTS or the Hugging Face cache)."
    ),
    model: str | None = typer.Option(None, "--model", help="open_clip model config (default ViT-L-14-quickgelu)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1 ..."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Discard an existing cache and start again."),
) -> None:
    """Embed every stimulus of a dataset once into an HDF5 cache (resumes an interrupted build)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from brainbench.errors import BrainbenchError
    from brainbench.plugins import get_plugins
    from brainbench_clip.cache import build_cache

    console = Console()
    plugins = get_plugins()
    options: dict[str, object] = {"batch_size": batch_size, "device": device}
    if weights is not None:
        options["weights"] = weights
    if model is not None:
        options["model"] = model
    # Errors (BrainbenchError) propagate: the CLI's main prints them as one line and exits non-zero.
    data = plugins.datasets.create(dataset, root=data_path)
    embedder = plugins.targets.create(target, **options)
    if not hasattr(embedder, "encode_images"):
        raise BrainbenchError(f"target {target!r} does not encode images, so it has nothing to cache")
    embedder.weights_id()  # a missing weights file is reported before any progress bar appears
    with Progress(
        TextColumn(f"[bold]{embedder.name}[/] {dataset}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("embed", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = build_cache(data, embedder, root=out, batch_size=batch_size, overwrite=overwrite, progress=show)
    console.print(
        f"cache {result.path}: {result.n_stimuli} stimuli, {result.n_encoded} encoded now, "
        f"{result.n_skipped} already done; {result.images_per_second:.1f} images/s",
        soft_wrap=True,
    )
