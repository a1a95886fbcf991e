"""One exception type per family of user mistakes.

The CLI catches ``JaxprobeError`` and prints only its message (no traceback unless ``--debug``), so every
message must say what was expected, what was found, and what to do about it.
"""


class JaxprobeError(Exception):
    """Base of all errors caused by the user's inputs rather than by a bug in jaxprobe."""


class DatasetError(JaxprobeError):
    """A dataset is missing, laid out wrongly, empty, or otherwise unusable."""


class CheckpointError(JaxprobeError):
    """A checkpoint is missing, truncated, or disagrees with its config."""


class ConfigError(JaxprobeError):
    """A config file or a ``--set`` override is invalid."""


class FeatureError(JaxprobeError):
    """Features are missing, incomplete, non-finite, or unusable for probing (e.g. a single-class split)."""
