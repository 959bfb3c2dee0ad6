"""Regenerate or check Clarion's generated deploy files (see :mod:`generator`).

Usage, with the workspace virtualenv's Python::

    .venv/bin/python deploy/generate.py generate   # what `make deploy-gen` runs
    .venv/bin/python deploy/generate.py check      # exit 1 and a diff when out of date
"""

from __future__ import annotations

from generator.cli import main

if __name__ == "__main__":
    main()
