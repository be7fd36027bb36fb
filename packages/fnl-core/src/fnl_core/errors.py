"""FnL's error types: every problem with user input is reported as one of these.

Commands catch :class:`FnLError` at the top level and print its message on one line, so a
message must name the file, field or component concerned and what was expected.
"""

from __future__ import annotations


class FnLError(Exception):
    """Base class of the errors FnL raises on purpose (as opposed to bugs)."""


class InputError(FnLError, ValueError):
    """A file or value given by the user cannot be used (unreadable, corrupt, out of range)."""


class ImageReadError(InputError):
    """An image file cannot be decoded into an RGB picture."""
