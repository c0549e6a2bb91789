"""Built-in plugin: NSD datasets (real files and the simulator) and the NSD retrieval task."""

from brainbench import hookimpl


@hookimpl
def register_datasets(register):
    register("nsd", "brainbench_nsd.dataset:open_nsd",
             description="Natural Scenes Dataset from files on disk (--data-path)")
    register("synthetic-nsd", "brainbench_nsd.dataset:open_synthetic_nsd",
             description="Simulated NSD-like data in the MindEye2 layout (no download)")


@hookimpl
def register_tasks(register):
    register("retrieval", "brainbench_nsd.retrieval:RetrievalTask",
             description="NSD test-set fMRI<->image retrieval: full N-way and 300-way x 30")


@hookimpl
def register_commands(app):
    from brainbench_nsd.commands import data_group, prepare_app

    group = data_group(app)
    (group or app).add_typer(prepare_app, name="prepare" if group else "prepare-data")
