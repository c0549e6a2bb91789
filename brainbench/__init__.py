"""brainbench: a harness to train, evaluate and compare fMRI-to-image decoders."""

from importlib.metadata import PackageNotFoundError, version

import pluggy

try:
    __version__ = version("brainbench")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

#: Decorator for plugin hook implementations: ``@brainbench.hookimpl``.
hookimpl = pluggy.HookimplMarker("brainbench")

__all__ = ["__version__", "hookimpl"]
