"""The runtime's error types: each message is one line naming the file, key or value."""

__all__ = ["RuntimeUsageError", "SidecarError", "UnreadableImageError"]


class RuntimeUsageError(RuntimeError):
    """A prediction job that cannot run as asked (bad arguments, a foreign output folder...)."""


class SidecarError(ValueError):
    """A ``model.json`` that is missing, unparsable or lacks / mistypes a key."""


class UnreadableImageError(ValueError):
    """An input file that cannot be decoded as an image (missing, truncated, not an image)."""
