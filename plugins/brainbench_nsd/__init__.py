"""Built-in plugin: NSD datasets (real files and the simulator) and the NSD retrieval task."""

from brainbench import hookimpl


@hookimpl
def register_datasets(register):
    def nsd(root=None, **options):
        from brainbench_nsd.dataset import open_nsd

        return open_nsd(root, **options)

    def synthetic_nsd(root=None, **options):
        from brainbench_nsd.dataset import open_synthetic_nsd

        return open_synthetic_nsd(root, **options)

    register("nsd", nsd, description="Natural Scenes Dataset from files on disk (--data-path)")
    register("synthetic-nsd", synthetic_nsd, description="Simulated NSD-like data in the MindEye2 layout (no download)")


@hookimpl
def register_tasks(register):
    def retrieval(**options):
        from brainbench_nsd.retrieval import RetrievalTask

        return RetrievalTask(**options)

    register("retrieval", retrieval, description="NSD test-set fMRI<->image retrieval: full N-way and 300-way x 30")
