"""The shipped plugin contract (brainbench.testing) over every registered encoder, task and declaration.

A third-party plugin installed into the test environment is picked up and tested here too; the same checks
run from a plugin's own package with ``pytest --pyargs brainbench.testing`` (see test_contract_shipped).
"""

from __future__ import annotations

from brainbench.testing.test_contract import (
    _brainbench_home,
    test_dataset_contract,
    test_declared_options,
    test_encoder_contract,
    test_target_contract,
    test_task_contract,
)

__all__ = ["_brainbench_home", "test_dataset_contract", "test_declared_options", "test_encoder_contract",
           "test_target_contract", "test_task_contract"]
