"""The parent process's side of the worker pipe: the pool, one handle per worker process, the decode-thread budget.

Nothing here runs in a worker process, and nothing here imports :mod:`steadytext_async._worker.child`: the two sides
meet only in the wire module, :mod:`steadytext_async._worker.protocol` (tests/test_layers.py holds that).
"""
