"""Built-in plugin: the MindEye residual-MLP encoder."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    def mindeye(**options):
        from brainbench_mindeye.encoder import MindEyeEncoder

        return MindEyeEncoder(**options)

    register(
        "mindeye",
        mindeye,
        description="MindEye residual MLP + projector (Scotti et al., NeurIPS 2023)",
        options="brainbench_mindeye.encoder:MindEyeEncoder",
    )
