"""Built-in plugin: Generic Object Decoding (GOD) data and zero-shot classification."""

from brainbench import hookimpl
__all__ = ["hookimpl"]
