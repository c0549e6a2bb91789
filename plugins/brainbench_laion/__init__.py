"""Built-in plugin: LAION retrieval on a local (FAISS) or remote (clip-retrieval) gallery index."""

from brainbench import hookimpl
__all__ = ["hookimpl"]
