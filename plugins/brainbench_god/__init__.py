"""Built-in plugin: Generic Object Decoding (GOD) data and zero-shot classification."""

from brainbench import hookimpl


@hookimpl
def register_datasets(register):
    def god(root=None, **options):
        from brainbench_god.dataset import open_god

        return open_god(root, **options)

    def synthetic_god(root=None, **options):
        from brainbench_god.dataset import open_synthetic_god

        return open_synthetic_god(root, **options)

    register("god", god, description="Generic Object Decoding from bdpy BData files (--data-path)")
    register("synthetic-god", synthetic_god, description="Simulated GOD-like data in the BData layout (no download)")


@hookimpl
def register_tasks(register):
    def god_zeroshot(**options):
        from brainbench_god.zeroshot import GodZeroShotTask

        return GodZeroShotTask(**options)

    register("god-zeroshot", god_zeroshot, description="GOD 50-way zero-shot classification against class-name text")
