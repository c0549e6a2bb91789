"""Built-in plugin: the closed-form ridge regression baseline."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    def ridge(**options):
        from brainbench_ridge.encoder import RidgeEncoder

        return RidgeEncoder(**options)

    register(
        "ridge",
        ridge,
        description="Closed-form ridge regression voxels -> target (penalty chosen on validation)",
        options="brainbench_ridge.encoder:RidgeEncoder",
    )
