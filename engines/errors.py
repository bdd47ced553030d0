"""User-facing errors.

Every failure a user can cause (a missing file, a face that is not there, a wrong checkpoint,
a stale engine, a camera that does not exist) raises a subclass of :class:`SplinecamError` whose
message is one line naming what was wrong and how to fix it. The CLI prints that line and exits
non-zero; nothing else is caught silently.
"""


class SplinecamError(Exception):
    """Base of all user-facing errors; ``str(err)`` is the one-line message shown to the user."""


class MediaError(SplinecamError):
    """An image, video or camera could not be read or written."""


class OutputError(MediaError):
    """An output path cannot be used: a folder, unwritable, one of the inputs, an unknown container
    (engines/outputs.py)."""


class FaceNotFoundError(SplinecamError):
    """No face was found where one is needed."""


class CheckpointError(SplinecamError):
    """A checkpoint is missing, unreadable, unsafe, or does not match the model config."""


class ConfigError(SplinecamError):
    """A model config name or YAML file is unknown or malformed."""


class BackendUnavailableError(SplinecamError):
    """The requested backend / device / precision cannot run on this machine."""


class EngineCacheError(SplinecamError):
    """A compiled engine is missing, stale or was built for another GPU / TensorRT / model."""


class BackendOffline(SplinecamError):
    """The networks cannot run right now but may again soon (a remote worker that went away). The live
    loop shows the avatar at rest — as when no face is found — and carries on; the message says why."""
