"""What aicli costs on top of Claude Code itself, measured side by side in one run.

Not part of the test suite: ``make bench`` (``python -m benchmarks.run``) runs it.
See ``benchmarks/README.md``.
"""
