"""The project's own error type: every error a user can fix is an `AmidError` whose
message names the file, row, key or option at fault; the CLIs print it without a
traceback (anything else is a bug and keeps its traceback)."""

from __future__ import annotations


class AmidError(Exception):
    """An error the user can fix; the message says what and where."""


class ConfigError(AmidError):
    """Bad configuration: unknown key, wrong type, out-of-range value."""


class ManifestError(AmidError):
    """Bad manifest: missing columns, duplicate ids, unknown split, missing media."""


class CacheError(AmidError):
    """A feature cache that is missing, incomplete, or not format version 1."""


class CheckpointError(AmidError):
    """A model file that is missing, truncated, or from another architecture."""


class OutputError(AmidError):
    """An output file could not be written (read-only folder, full disk, a folder in the way)."""


class MediaError(AmidError):
    """A sample's media could not be decoded; the message is the errors sidecar's reason."""
