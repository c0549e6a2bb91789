"""Built-in plugin: LAION retrieval on a local (FAISS) or remote (clip-retrieval) gallery index.

Registrations only: faiss, numpy, pyarrow and torch are imported by the modules these functions load.
"""

from brainbench import hookimpl


@hookimpl
def register_tasks(register):
    def laion(**options):
        from brainbench_laion.task import LaionTask

        return LaionTask(**options)

    register(
        "laion",
        laion,
        description="LAION-style retrieval: top-k gallery candidates per prediction (local or remote index)",
        options="brainbench_laion.task:LaionTask",
    )


@hookimpl
def register_commands(app):
    from brainbench_laion.commands import index_app

    app.add_typer(index_app, name="index")
