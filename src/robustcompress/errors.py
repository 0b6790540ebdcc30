"""Errors a user can cause. The CLI prints their message (no traceback) and exits with code 2."""


class RobustCompressError(Exception):
    """Base class: the message names the problem and the fix."""


class ConfigError(RobustCompressError):
    """A config value or command-line option is unknown, of the wrong type or out of range."""


class DataError(RobustCompressError):
    """A dataset is missing, truncated, corrupt or of an unexpected shape."""


class CheckpointError(RobustCompressError):
    """A checkpoint is unreadable, unsafe, or built for another architecture."""


class UnsupportedModelError(RobustCompressError):
    """A model contains a construct a technique cannot handle (the message names it)."""
