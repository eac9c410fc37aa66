"""The sophia-tasks benchmark harness: ``python -m bench`` (``make bench``).

See docs/benchmarks.md for what each scenario measures and how.
"""
