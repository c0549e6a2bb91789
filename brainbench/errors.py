"""Errors the CLI reports as one clear line instead of a traceback."""


def one_line(exc: BaseException | None, limit: int = 300) -> str:
    """An exception's message on one line, cut at ``limit`` characters (mlflow's run over many lines)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit] + "..."


class BrainbenchError(Exception):
    """Base class: a problem the user can fix (bad input, unknown name, missing file)."""


class PluginError(BrainbenchError):
    """A plugin could not be loaded or is malformed."""


class UnknownNameError(BrainbenchError, KeyError):
    """A name that no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicateNameError(PluginError):
    """Two plugins registered the same name."""


class DataError(BrainbenchError):
    """Input data is missing or malformed; the message names the file, key and expected shape."""


class CheckpointMismatchError(BrainbenchError):
    """A checkpoint does not fit the model it is loaded into."""


class TrackingError(BrainbenchError):
    """The MLflow tracking store cannot be reached."""


class CheckpointCorruptError(DataError):
    """A checkpoint or model file that cannot be read (truncated, overwritten, not ours)."""
