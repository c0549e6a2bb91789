"""The plugin contract, shipped: checks an encoder or task plugin can run on itself, and that the option
declarations of every encoder, task, dataset and target plugin are well formed and build it. Datasets and
targets have no behavioural checks of their own yet (nor is a fitted encoder saved, loaded and run again).

A third-party package runs the whole contract on its own plugins with::

    BRAINBENCH_CONTRACT=myplugin pytest --pyargs brainbench.testing

(``BRAINBENCH_CONTRACT``: plugin or distribution names, comma-separated; unset: every installed plugin),
or calls the checks from its own tests::

    from brainbench.testing import check_encoder, check_task

    def test_my_encoder(tmp_path):
        check_encoder("my-encoder", tmp_path, options={"width": 8})

Each check raises :class:`ContractError` (an AssertionError) whose message names the plugin, what was
expected and what it got. Data come from the built-in simulator: nothing is downloaded.
"""

from brainbench.testing.contract import (
    ContractError,
    check_declared_options,
    check_encoder,
    check_task,
    contract_names,
    toy_fit_data,
)

__all__ = [
    "ContractError",
    "check_declared_options",
    "check_encoder",
    "check_task",
    "contract_names",
    "toy_fit_data",
]
