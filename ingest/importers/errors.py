"""The importers' one error: options and a file that cannot work together."""

from __future__ import annotations


class ImportOptionError(ValueError):
    """The file and the options cannot work together; the message says what to fix."""
