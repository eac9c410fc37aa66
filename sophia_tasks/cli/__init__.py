"""The ``sophia-tasks`` command line: one module per command group, ``main`` is the entry point."""
from sophia_tasks.cli.main import main

__all__ = ["main"]
