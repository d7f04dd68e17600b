"""``python -m capsim`` runs the command-line interface."""

from __future__ import annotations

from capsim.cli import main

if __name__ == "__main__":
    main()
