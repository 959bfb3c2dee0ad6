"""Fixtures of the end-to-end tests; the harness itself is in harness.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# Test modules here import their helpers (harness, expected) as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import HOUR_FILE, Clarion, inbox, launch

__all__ = ["Clarion", "inbox", "launch"]


@pytest.fixture
def hour_file() -> Path:
    if not HOUR_FILE.exists():
        pytest.fail(f"the real events are missing: {HOUR_FILE}")
    return HOUR_FILE
