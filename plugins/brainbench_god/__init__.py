"""Built-in plugin: Generic Object Decoding (GOD) data and zero-shot classification."""

from brainbench import hookimpl


@hookimpl
def register_datasets(register):
    register("god", "brainbench_god.dataset:open_god",
             description="Generic Object Decoding from bdpy BData files (--data-path)")
    register("synthetic-god", "brainbench_god.dataset:open_synthetic_god",
             description="Simulated GOD-like data in the BData layout (no download)")


@hookimpl
def register_tasks(register):
    register("god-zeroshot", "brainbench_god.zeroshot:GodZeroShotTask",
             description="GOD 50-way zero-shot classification against class-name text")
