"""semdepth: self-supervised depth as the teacher for semantic segmentation."""

__version__ = "0.1.0"


class SemdepthError(RuntimeError):
    """A user-facing failure; the CLI prints its one-line message and exits non-zero."""
