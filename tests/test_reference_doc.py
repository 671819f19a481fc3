"""The original API document's examples run on this package with only the import changed.

Default-length generations (512 tokens) would make this test take minutes, so the default ``max_new_tokens`` is
lowered for the duration of the test; the example code itself is unchanged.
"""

import pytest
from reference import doc_examples

from steadytext_async import _validate


def test_original_document_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_validate, "DEFAULT_MAX_NEW_TOKENS", 8)
    doc_examples.run_all()
