"""The worker process's side of the pipe: llama.cpp, the decode loop, batching, the batching self-test.

Run as ``python -m steadytext_async._worker.child`` (:mod:`.__main__`). Nothing here imports
:mod:`steadytext_async._worker.parent`: the two sides meet only in the wire module,
:mod:`steadytext_async._worker.protocol` (tests/test_layers.py holds that). This ``__init__`` imports nothing, so
the parent may import a child module (tests and benchmarks drive the decode loop in process) without starting one.
"""
