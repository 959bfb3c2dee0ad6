"""Command groups of the ``clarion`` CLI, one module each."""
