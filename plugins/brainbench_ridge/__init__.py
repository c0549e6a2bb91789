"""Built-in plugin: the closed-form ridge regression baseline."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    register("ridge", "brainbench_ridge.encoder:RidgeEncoder",
             description="Closed-form ridge regression voxels -> target (penalty chosen on validation)")
