"""``brainbench simulate stats``: what the built-in simulator's data are like (noise ceilings, read-out ceilings)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    simulate_app = typer.Typer(help="The built-in simulator: what its data are like.", no_args_is_help=True)
    app.add_typer(simulate_app, name="simulate")

    @simulate_app.command("stats")
    def stats(
        scale: str = typer.Option("small", help="Simulated size: small (the demo), nsd (real sizes) or tiny."),
        seed: int = typer.Option(0, help="Simulator seed (as --dataset-opt seed=...)."),
        subject: int = typer.Option(1, help="Subject (1, 2, 5 or 7)."),
        root: Path | None = typer.Option(None, help="A simulated NSD folder (default: the one runs use)."),
        ceilings: bool = typer.Option(
            False, "--ceilings/--no-ceilings", help="Also fit the oracle read-outs (ridge vs MLP) on noise-free data."
        ),
        oracle_samples: int = typer.Option(20000, help="Noise-free training stimuli for the oracle read-outs."),
        epochs: int = typer.Option(30, help="MLP epochs for the nonlinear oracle."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    ) -> None:
        """Per ROI: voxels, median ncsnr, median 1- and 3-trial noise ceilings (NSD's formula), measured on
        the simulated betas a run reads; with --ceilings, how well ridge and an MLP read the CLIP-like target
        out of noise-free responses (R^2 and cosine on held-out stimuli)."""
        from rich.console import Console
        from rich.table import Table

        from brainbench.simulate.nsd import scale_named
        from brainbench.simulate.stats import noise_table, oracle_ceilings, simulated_nsd

        scale_named(scale)  # a clear error for an unknown scale before any work
        console = Console()
        with console.status(f"generating/reading simulated NSD subject {subject} ({scale}, seed {seed})"):
            sim = simulated_nsd(scale, seed, subject, root)
            rows = noise_table(sim.root, subject)
        report: dict[str, object] = {"scale": scale, "seed": seed, "subject": subject, "root": str(sim.root),
                                     "rois": rows}
        if ceilings:
            from rich.progress import Progress

            with Progress(console=console, transient=True) as bar:
                task = bar.add_task("oracle MLP on noise-free voxels", total=epochs)
                result = oracle_ceilings(
                    sim, subject, n_train=oracle_samples, epochs=epochs,
                    progress=lambda done, total, loss: bar.update(task, completed=done),
                )
            report["ceilings"] = vars(result)
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        table = Table(title=f"Simulated NSD, subject {subject} ({scale}, seed {seed}): NSD-style noise ceilings")
        for column in ("atlas", "ROI", "voxels", "median ncsnr", "p90 ncsnr", "NC 1 trial %", "NC 3 trials %"):
            table.add_column(column, justify="left" if column in ("atlas", "ROI") else "right")
        for row in rows:
            table.add_row(row["atlas"], row["roi"], str(row["voxels"]), f"{row['median_ncsnr']:.3f}",
                          f"{row['p90_ncsnr']:.3f}", f"{row['nc1']:.1f}", f"{row['nc3']:.1f}")
        console.print(table)
        if ceilings:
            c = report["ceilings"]
            console.print(
                f"Oracle read-outs of noise-free voxels ({c['n_train']} training / {c['n_test']} held-out stimuli, "
                f"{c['n_components']} components): ridge R^2 {c['linear_r2']:.3f} (cosine {c['linear_cosine']:.3f}), "
                f"MLP R^2 {c['nonlinear_r2']:.3f} (cosine {c['nonlinear_cosine']:.3f})"
            )
