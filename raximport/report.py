"""Everything raximport shows a person goes through here."""

from __future__ import annotations

import sys


def note(message: str) -> None:
    """One line of verbose or status output, on stderr so that it never mixes with the script's."""
    sys.stderr.write(f"raximport: {message}\n")
    sys.stderr.flush()
