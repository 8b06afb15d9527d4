"""Exceptions that carry a message a user can act on."""


class WtaError(Exception):
    """Base class: the message names the input, what is wrong and what to do."""


class ConfigError(WtaError):
    """A preset, setting or run-config value is unknown or out of range."""


class DatasetError(WtaError):
    """A dataset is unusable as a whole (missing path, wrong layout, empty genre)."""


class AudioDecodeError(WtaError):
    """One audio file cannot be decoded; callers record it and go on."""


class ArtifactError(WtaError):
    """A stored artifact (adapter, trajectory, checkpoint) is missing, corrupt or mismatched."""


class UnsafeFileError(ArtifactError):
    """A weights file in a format that can run code when loaded (pickle)."""
