"""Exceptions a caller can catch by kind. Messages name the file/field/provider involved."""

from __future__ import annotations


class CorebuildError(Exception):
    """Base for errors that are the user's to fix (bad input, missing files): no traceback."""


def one_line(text: str) -> str:
    """`text` with control characters (newlines included) escaped: one line of output."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ManifestError(CorebuildError):
    def __init__(self, path: str, field: str, message: str):
        self.path, self.field = path, field
        super().__init__(one_line(f"{path}: {field}: {message}"))


class ConfigError(CorebuildError):
    pass


class StageError(Exception):
    """A per-record failure with a short reason code; the record becomes a failure row."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class ModelUnavailableError(CorebuildError):
    """A model backend cannot load (missing package or weights); says what and where."""


class BuildError(CorebuildError):
    """A build finished but its output does not add up; the manifest says how."""


class StorageError(CorebuildError):
    """A storage location (local directory or gs:// bucket) cannot be read or written; names it."""
