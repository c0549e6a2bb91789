"""``brainbench data prepare nsd NSD_ROOT OUT --subject N``: raw NSD -> the MindEye2 layout (``prepare.py``)."""

from __future__ import annotations

from pathlib import Path

import typer

prepare_app = typer.Typer(help="Convert a dataset's original release into a layout brainbench reads.",
                          no_args_is_help=True)


@prepare_app.command("nsd")
def prepare_nsd_command(
    nsd_root: Path = typer.Argument(..., help="The NSD release folder (holding nsddata/ and nsddata_betas/)."),
    out: Path = typer.Argument(..., help="Output folder (MindEye2 layout); resumed if a build was interrupted."),
    subject: int = typer.Option(..., "--subject", "-s", min=1, max=8, help="NSD subject number (1-8)."),
    sessions: int | None = typer.Option(None, "--sessions", min=1, help="Only the first N sessions (default: all)."),
    trials_per_session: int = typer.Option(750, "--trials-per-session", min=1, help="NSD has 750."),
    roi: str = typer.Option(
        "nsdgeneral", "--roi",
        help="The voxels to keep, from NSD's ROI atlases (roi/*.nii.gz): an atlas (nsdgeneral, streams, "
        "prf-visualrois, floc-faces, ...), atlas:label[+label...] (streams:ventral, prf-visualrois:V1v+V1d), "
        "or label names (V1v,V1d); commas join terms into a union. See docs/nsd-rois.md.",
    ),
) -> None:
    """Mask with an ROI (nsdgeneral by default), divide by 300, z-score per session; write betas HDF5, behav
    shards, shared1000.npy and each voxel's ROI labels (rois_subjNN.hdf5, for --dataset-opt roi=...)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from brainbench_nsd.prepare import describe, prepare_nsd

    console = Console()
    with Progress(TextColumn(f"[bold]subject {subject}[/] sessions"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), TextColumn("{task.description}"), console=console) as bar:
        task = bar.add_task("", total=None)

        def show(done: int, total: int, session: int, skipped: bool) -> None:
            note = f"session {session} " + ("already done, skipped" if skipped else "written")
            bar.update(task, completed=done, total=total, description=note)

        result = prepare_nsd(nsd_root, out, subject, list(range(1, sessions + 1)) if sessions else None,
                             trials_per_session, progress=show, roi=roi)
    for key, value in describe(result).items():
        console.print(f"{key}: {value}", highlight=False, soft_wrap=True)
    console.print(f"read it with: brainbench data inspect {out}", highlight=False, soft_wrap=True)


def data_group(app: typer.Typer) -> typer.Typer | None:
    """The core's ``data`` command group, to add ``data prepare`` under it."""
    for group in app.registered_groups:
        if group.name == "data" and group.typer_instance is not None:
            return group.typer_instance
    return None
