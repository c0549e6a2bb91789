"""brainbench-knn: registrations only; a class is imported when it is built or its options are read."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    register("knn", "brainbench_knn.encoder:KnnEncoder",
             description="k-nearest-neighbour decoder (example third-party plugin)")


@hookimpl
def register_tasks(register):
    register("mean-cosine", "brainbench_knn.task:MeanCosineTask",
             description="Mean cosine of predictions to targets (example plugin)")
