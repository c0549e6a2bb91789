"""Built-in plugin: Generic Object Decoding (GOD) data and zero-shot classification."""

from brainbench import hookimpl
from brainbench.options import Option, Options

# Datasets are opened by functions, so their options are declared here, beside the registration.
GOD_OPTIONS = Options(
    Option("subjects", list, None, "subjects to open (default: every Subject{N}.h5)", item=int, minimum=1,
           nullable=True),
    Option("roi", str, "ROI_VC", "BData region-of-interest column selecting the voxels"),
    Option("class_names", str, None, "class-name file (default: found beside the data)", nullable=True),
)
SYNTHETIC_GOD_OPTIONS = Options(
    Option("seed", int, 0, "simulator seed", minimum=0, maximum=2**32 - 1),
    Option("scale", str, "small", "simulated size", choices=("small", "tiny")),
    Option("subjects", list, None, "subjects offered (each written when first used)", item=int, minimum=1,
           nullable=True),
    Option("roi", str, "ROI_VC", "BData region-of-interest column selecting the voxels"),
)


@hookimpl
def register_datasets(register):
    def god(root=None, **options):
        from brainbench_god.dataset import open_god

        return open_god(root, **options)

    def synthetic_god(root=None, **options):
        from brainbench_god.dataset import open_synthetic_god

        return open_synthetic_god(root, **options)

    register("god", god, description="Generic Object Decoding from bdpy BData files (--data-path)", options=GOD_OPTIONS)
    register(
        "synthetic-god",
        synthetic_god,
        description="Simulated GOD-like data in the BData layout (no download)",
        options=SYNTHETIC_GOD_OPTIONS,
    )


@hookimpl
def register_tasks(register):
    def god_zeroshot(**options):
        from brainbench_god.zeroshot import GodZeroShotTask

        return GodZeroShotTask(**options)

    register(
        "god-zeroshot",
        god_zeroshot,
        description="GOD 50-way zero-shot classification against class-name text",
        options="brainbench_god.zeroshot:GodZeroShotTask",
    )
