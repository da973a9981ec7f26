"""The ``dotmac-events`` command line (click and rich, from the ``cli`` extra).

``dotmac-events demo`` runs an end-to-end demo on the memory bus; ``dotmac-events worker
app:router --bus URL`` runs an app's handlers until SIGTERM; ``publish``, ``stats`` and
``tail`` talk to a bus from the shell. Importing this package imports neither click nor rich:
:func:`main` does, and prints the install line when they are missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from dotmac.events.cli.demo import run_demo

__all__ = ["INSTALL_HINT", "main", "run_demo"]

INSTALL_HINT = (
    'dotmac-events: the command line needs click and rich: pip install "dotmac-events[cli]"'
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    from dotmac.events.cli.commands import run

    return run(argv)
