"""raximport's own exception and warning types."""

from __future__ import annotations


class RaxWarning(UserWarning):
    """Something raximport could not do; the code runs on, unchecked where it says so."""
