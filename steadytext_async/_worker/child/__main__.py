"""``python -m steadytext_async._worker.child``: one worker process (see :mod:`.worker`)."""

from .worker import main

main()
