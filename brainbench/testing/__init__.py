"""The plugin contract, shipped: checks a plugin can run on itself. Encoders are fitted on toy data with
pooled (768) and token-shaped (5x16) targets, saved, loaded back and run again; tasks score perfect and random
predictions; datasets that open without files (simulators) have their subjects, voxel counts, trials per split
(shapes, dtypes, stimulus ids) checked; targets embed a few simulated stimuli (shape, float32, finite,
cache_path); every option declaration is well formed and builds its plugin. A kind a package does not provide
is one skip saying so.

A third-party package runs the whole contract on its own plugins with::

    BRAINBENCH_CONTRACT=myplugin pytest --pyargs brainbench.testing

(``BRAINBENCH_CONTRACT``: plugin or distribution names, comma-separated; unset: every installed plugin),
or calls the checks from its own tests::

    from brainbench.testing import check_encoder, check_task

    def test_my_encoder(tmp_path):
        check_encoder("my-encoder", tmp_path, options={"width": 8})
        check_encoder("my-encoder", tmp_path, options={"width": 8}, target_shape=(5, 16))  # token-shaped

Each check raises :class:`ContractError` (an AssertionError) whose message names the plugin, what was
expected and what it got. Data come from the built-in simulator: nothing is downloaded.
"""

from brainbench.testing.contract import (
    ContractError,
    ContractSkip,
    check_dataset,
    check_declared_options,
    check_encoder,
    check_target,
    check_task,
    contract_names,
    toy_fit_data,
)

__all__ = [
    "ContractError",
    "ContractSkip",
    "check_dataset",
    "check_declared_options",
    "check_encoder",
    "check_target",
    "check_task",
    "contract_names",
    "toy_fit_data",
]
