"""Built-in plugin: LAION retrieval on a local (FAISS) or remote (clip-retrieval) gallery index.

Registrations only: faiss, numpy, pyarrow and torch are imported by the modules these names load.
"""

from brainbench import hookimpl


@hookimpl
def register_tasks(register):
    register("laion", "brainbench_laion.task:LaionTask",
             description="LAION-style retrieval: top-k gallery candidates per prediction (local or remote index)")


@hookimpl
def register_commands(app):
    from brainbench_laion.commands import index_app

    app.add_typer(index_app, name="index")
