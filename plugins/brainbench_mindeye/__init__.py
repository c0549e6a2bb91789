"""Built-in plugin: the MindEye residual-MLP encoder."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    register("mindeye", "brainbench_mindeye.encoder:MindEyeEncoder",
             description="MindEye residual MLP + projector (Scotti et al., NeurIPS 2023)")
