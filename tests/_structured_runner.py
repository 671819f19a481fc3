"""The worker's constrained decode loop on the embedded base gemma-3-270m (raw prompts: the decode loop itself is under
test, not a chat template), shared by the structured tests (one model per session).

``Runner.generate`` runs the worker's own loop (``_worker.child.decode.SequenceDecoder``, driven by ``LlamaModel.run``
as the worker drives a request with no neighbours): the matcher chooses each token with the tokens remaining (the
budget rule), and the end maps to the same finish reasons and ConstraintError.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from steadytext_async._config import Settings
from steadytext_async._modelref import ModelRef
from steadytext_async._registry import GEMMA_BASE, resolve_model
from steadytext_async._worker.child.decode import SequenceDecoder
from steadytext_async._worker.child.llama import LlamaModel
from steadytext_async._worker.child.sampling import Sampler
from steadytext_async.structured import Constraint, MatcherFactory


@dataclass
class Output:
    text: str
    token_ids: list[int]
    finish: str


class Runner(LlamaModel):
    """The worker's model and its one decode loop, one sequence at a time."""

    def __init__(self) -> None:
        ref = ModelRef("registry", name=GEMMA_BASE.name)
        spec = resolve_model(ref, default_size="mini", default_path=None, model_dir=Settings.from_env().model_dir)
        super().__init__(str(spec.path), n_ctx=1024, n_batch=256, n_threads=2)
        self.factory = MatcherFactory(self.model)

    def generate(
        self, prompt: str, constraint: Constraint, max_new: int, *, temperature: float = 0.0, seed: int = 42
    ) -> Output:
        sampler = Sampler(temperature=temperature, seed=seed, top_k=40, top_p=0.95, min_p=0.05)
        matcher = self.factory.matcher(constraint)  # fed generated tokens only, never the prompt
        dec = SequenceDecoder(self, max_new_tokens=max_new, sampler=sampler, matcher=matcher)
        self.run(self.tokenize(prompt.encode(), add_bos=True, special=False), dec)
        assert dec.finish_reason is not None
        return Output(dec.text(), dec.ids, dec.finish_reason)


@functools.cache
def shared_runner() -> Runner:
    """The session's one runner (model + llguidance tokenizer take seconds to build)."""
    return Runner()
