"""brainbench-knn: registrations only; the implementation is imported when an object is built."""

from brainbench import hookimpl


@hookimpl
def register_encoders(register):
    def knn(**options):
        from brainbench_knn.encoder import KnnEncoder

        return KnnEncoder(**options)

    # options= names the class that declares them: imported only when options are checked or listed
    register(
        "knn", knn, description="k-nearest-neighbour decoder (example third-party plugin)",
        options="brainbench_knn.encoder:KnnEncoder",
    )


@hookimpl
def register_tasks(register):
    def mean_cosine(**options):
        from brainbench_knn.task import MeanCosineTask

        return MeanCosineTask(**options)

    register(
        "mean-cosine", mean_cosine, description="Mean cosine of predictions to targets (example plugin)",
        options="brainbench_knn.task:MeanCosineTask",
    )
