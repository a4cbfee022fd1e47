"""``python -m whitebox`` and the ``whitebox`` console script: see ``whitebox.cli``."""

from __future__ import annotations

import sys

from whitebox.cli import main as _cli_main


def main() -> int:
    """Entry point of the ``whitebox`` console script."""
    return _cli_main()


if __name__ == "__main__":
    sys.exit(main())
