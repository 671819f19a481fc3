"""The worker's constrained decode loop on the embedded model, shared by the structured tests (one model per session).

``Runner.generate`` has the shape of ``_worker/child.py``'s loop: the matcher chooses each token with the tokens
remaining (the budget rule), and the end of the loop maps to the same finish reasons and ConstraintError.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from steadytext_async import ConstraintError
from steadytext_async._registry import embedded_model
from steadytext_async._worker.llama import LlamaModel
from steadytext_async._worker.sampling import Sampler
from steadytext_async.structured import Constraint, MatcherFactory


@dataclass
class Output:
    text: str
    token_ids: list[int]
    finish: str


class Runner(LlamaModel):
    """The worker's decode primitives plus the constrained loop proposed for ``Worker.generate``."""

    def __init__(self) -> None:
        super().__init__(str(embedded_model().path), n_ctx=1024, n_batch=256, n_threads=1)
        self.factory = MatcherFactory(self.llm)

    def generate(
        self, prompt: str, constraint: Constraint, max_new: int, *, temperature: float = 0.0, seed: int = 42
    ) -> Output:
        self.llm.reset()  # type: ignore[no-untyped-call]
        self.llm.eval(self.llm.tokenize(prompt.encode(), add_bos=True, special=False))
        sampler = Sampler(temperature=temperature, seed=seed, top_k=40, top_p=0.95, min_p=0.05)
        matcher = self.factory.matcher(constraint)  # fed generated tokens only, never the prompt
        ids: list[int] = []
        finish = "length"
        is_end = self.is_end
        for i in range(max_new):
            token = matcher.choose(self.logits(), sampler.pick, is_end, remaining=max_new - i)
            if token is None:
                finish = "constraint_forced" if matcher.forced else "constraint_complete"
                break
            matcher.advance(token)
            ids.append(token)
            if i + 1 < max_new:
                self.llm.eval([token])
        text = b"".join(self.piece(t) for t in ids).decode("utf-8", "replace")
        if finish == "length":
            if matcher.accepting and matcher.forced:
                finish = "constraint_forced"
            elif matcher.done:
                finish = "constraint_complete"
            elif not matcher.accepting:
                shortest = "" if matcher.minimum is None else f"; the shortest valid output is {matcher.minimum} tokens"
                raise ConstraintError(f"max_new_tokens={max_new} ran out{shortest}", partial_text=text)
        return Output(text, ids, finish)


@functools.cache
def shared_runner() -> Runner:
    """The session's one runner (model + llguidance tokenizer take seconds to build)."""
    return Runner()
