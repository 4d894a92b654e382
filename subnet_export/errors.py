"""The error tree of subnet-export.

Every error a user can cause is a :class:`SubnetExportError`; its message says what is wrong and
what to do. The CLI prints that message alone (no traceback unless ``--debug``) and exits with
:attr:`SubnetExportError.exit_code`.
"""

from __future__ import annotations

__all__ = [
    "ArchError",
    "BundleError",
    "CheckpointError",
    "ExportError",
    "InputError",
    "MaterializeError",
    "SearchSpaceError",
    "SubnetExportError",
    "TamperError",
]


class SubnetExportError(Exception):
    """Base class of every error the tool raises on purpose."""

    exit_code = 2


class ArchError(SubnetExportError, ValueError):
    """An architecture dict does not fit the supernet's search space."""

    def __init__(self, message: str, label: str | None = None) -> None:
        super().__init__(message)
        self.label = label


class SearchSpaceError(SubnetExportError, ValueError):
    """A search space is ill-formed (e.g. one label with two candidate lists)."""


class CheckpointError(SubnetExportError):
    """A checkpoint cannot be read safely or does not fit the supernet."""


class InputError(SubnetExportError):
    """A user-supplied file, path or option is unusable."""


class ExportError(SubnetExportError):
    """torch.onnx failed to export the materialized model, or the result failed the checker."""


class BundleError(SubnetExportError):
    """A deployment bundle is missing, unreadable or malformed."""


class TamperError(SubnetExportError):
    """A bundle's files do not match the hashes its manifest records."""

    exit_code = 1


class MaterializeError(SubnetExportError):
    """The plain model does not match what the supernet wrote for it (a broken module contract)."""
