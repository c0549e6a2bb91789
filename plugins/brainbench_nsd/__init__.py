"""Built-in plugin: NSD datasets (real files and the simulator) and the NSD retrieval task."""

from brainbench import hookimpl
from brainbench.options import Option, Options

# Datasets are opened by functions, so their options are declared here, beside the registration.
NSD_OPTIONS = Options(
    Option("layout", str, "auto", "file layout on disk (auto: detected)",
           choices=("auto", "mindeye2", "mindeye1", "litemind")),
    Option("test_split", str, "auto",
           "mindeye2 release: test on wds/subjNN/new_test (MindEye2's) or test; auto: new_test when present",
           choices=("auto", "new_test", "test")),
    Option("train_repeats", str, "all",
           "mindeye1 layout: training rows are every repeat (all), one fixed repeat per image (one-per-image), "
           "or MindEye1's own sampling: each step takes repeat step % 3 of every image in its batch "
           "(one-per-step)", choices=("all", "one-per-image", "one-per-step")),
    Option("roi", str, "all",
           "mindeye2 layout: the voxels to use, by the per-voxel labels `data prepare nsd` stores "
           "(rois_subjNN.hdf5): an atlas, atlas:label[+label...] or label names, commas for a union "
           "(e.g. V1v,V1d or streams:ventral); all: every stored voxel"),
)
SYNTHETIC_NSD_OPTIONS = Options(
    Option("scale", str, "small", "simulated size: small (seconds on a laptop), tiny (tests), nsd (real sizes)",
           choices=("small", "tiny", "nsd")),
    Option("seed", int, 0, "simulator seed", minimum=0, maximum=2**32 - 1),
    Option("tokens", bool, False, "also store 257x768 token embeddings"),
    Option("images", bool, False, "also store stimulus images"),
    Option("roi", str, "all",
           "the voxels to use, by the simulator's per-voxel labels (rois_subjNN.hdf5): an atlas, "
           "atlas:label[+label...] or label names, commas for a union; all: every voxel"),
)


@hookimpl
def register_datasets(register):
    def nsd(root=None, **options):
        from brainbench_nsd.dataset import open_nsd

        return open_nsd(root, **options)

    def synthetic_nsd(root=None, **options):
        from brainbench_nsd.dataset import open_synthetic_nsd

        return open_synthetic_nsd(root, **options)

    register("nsd", nsd, description="Natural Scenes Dataset from files on disk (--data-path)", options=NSD_OPTIONS)
    register(
        "synthetic-nsd",
        synthetic_nsd,
        description="Simulated NSD-like data in the MindEye2 layout (no download)",
        options=SYNTHETIC_NSD_OPTIONS,
    )


@hookimpl
def register_tasks(register):
    def retrieval(**options):
        from brainbench_nsd.retrieval import RetrievalTask

        return RetrievalTask(**options)

    register(
        "retrieval",
        retrieval,
        description="NSD test-set fMRI<->image retrieval: full N-way and 300-way x 30",
        options="brainbench_nsd.retrieval:RetrievalTask",
    )


@hookimpl
def register_commands(app):
    from brainbench_nsd.commands import data_group, prepare_app

    group = data_group(app)
    (group or app).add_typer(prepare_app, name="prepare" if group else "prepare-data")
