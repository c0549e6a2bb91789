"""The ``brainbench`` command line (Typer + rich)."""
