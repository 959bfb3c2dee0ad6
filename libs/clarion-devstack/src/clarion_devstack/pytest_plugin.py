"""pytest plugin of Clarion: fixtures backed by the embedded development stack."""

from __future__ import annotations
