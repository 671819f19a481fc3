"""Examples from the original SteadyText text-generation API document, run on steadytext-async.

Only the import changed (``import steadytext_async as steadytext``). Where the original promises what greedy
decoding cannot do — different seeds giving different text at temperature 0 — the assertion is kept but flipped,
with a comment: at temperature 0 the seed is ignored (and a warning is logged once). ``research_prompts`` and
similar free names from the document are defined here.
"""

import re
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import steadytext_async as steadytext


def generate_examples() -> None:
    # Generate with different seeds for variation
    text1 = steadytext.generate("Write a story", seed=123)
    text2 = steadytext.generate("Write a story", seed=123)  # Same as text1
    text3 = steadytext.generate("Write a story", seed=456)  # Same at temperature 0 (greedy ignores the seed)
    assert text1 == text2
    assert text1 == text3  # the original claims "Different result"; greedy decoding cannot give one
    print(f"Seed 123: {text1[:50]}...")
    print(f"Seed 456: {text3[:50]}...")
    steadytext.generate("Write a haiku", temperature=0.0)
    steadytext.generate("Write a haiku", temperature=0.7)
    steadytext.generate("Write a haiku", temperature=1.2)
    result1 = steadytext.generate("Test", seed=42, temperature=0.5)
    result2 = steadytext.generate("Test", seed=42, temperature=0.5)
    assert result1 == result2  # Always true!


def generate_iter_examples() -> None:
    print("Stream 1 (seed=123):")
    for token in steadytext.generate_iter("Tell me a joke", seed=123):
        print(token, end="", flush=True)
    for token in steadytext.generate_iter("Write a haiku", temperature=0.8):
        print(token, end="", flush=True)
    for token in steadytext.generate_iter("Story", seed=42, temperature=0.5):
        print(token, end="", flush=True)


def deterministic_behavior() -> None:
    assert steadytext.generate("hello world") == steadytext.generate("hello world")
    assert steadytext.generate("hello world", temperature=0.5) == steadytext.generate("hello world", temperature=0.5)
    assert steadytext.generate("hello world", seed=123) == steadytext.generate("hello world", seed=123)
    # "Different seeds produce different results" holds only with temperature > 0:
    assert steadytext.generate("hello world", seed=123, temperature=0.8) != steadytext.generate(
        "hello world", seed=456, temperature=0.8
    )
    tokens1 = list(steadytext.generate_iter("hello world", seed=789))
    tokens2 = list(steadytext.generate_iter("hello world", seed=789))
    assert tokens1 == tokens2  # Always passes!


def custom_seed_use_cases() -> None:
    research_prompts = ["What is entropy?", "Define a prime number"]
    research_seed = 42
    results = []
    for prompt in research_prompts:
        result = steadytext.generate(prompt, seed=research_seed)
        results.append((prompt, result))
        research_seed += 1
    assert len(results) == 2


def fallback_behavior() -> None:
    # Without a loadable model (size="small" needs the Hugging Face Hub, offline here) the fallback is used.
    text1 = steadytext.generate("test prompt", seed=42, size="small")
    text2 = steadytext.generate("test prompt", seed=42, size="small")
    text3 = steadytext.generate("test prompt", seed=123, size="small")
    assert len(text1) > 0
    assert text1 == text2
    assert text1 != text3
    fallback_texts = [steadytext.generate("fallback test", seed=seed, size="small") for seed in [100, 200, 300]]
    assert len(set(fallback_texts)) == 3


def edge_cases() -> None:
    empty_result = steadytext.generate("")
    print(f"Empty prompt result: {empty_result[:50]}...")
    long_prompt = "Explain " * 1000 + "machine learning"
    result = steadytext.generate(long_prompt)
    print(f"Long prompt handled: {len(result)} chars generated")
    unicode_result = steadytext.generate("Write about 🤖 and 人工智能")
    print(f"Unicode handled: {unicode_result[:100]}...")
    multiline = steadytext.generate("""Write a function that:
1. Takes a list
2. Sorts it
3. Returns the result""")
    print(f"Multiline prompt: {multiline[:100]}...")


def stream_large_generation(prompt: str, max_chunks: int = 100) -> int:
    chunks = []
    total_tokens = 0
    for _i, token in enumerate(steadytext.generate_iter(prompt)):
        chunks.append(token)
        total_tokens += 1
        if len(chunks) >= max_chunks:
            sys.stdout.write("".join(chunks))
            sys.stdout.flush()
            chunks = []
    if chunks:
        sys.stdout.write("".join(chunks))
    print(f"\nGenerated {total_tokens} tokens")
    return total_tokens


class TextGenerator:
    def __init__(self, default_seed: int = 42):
        self.default_seed = default_seed
        self.generation_count = 0

    def preprocess(self, prompt: str) -> str:
        prompt = " ".join(prompt.split())
        if not prompt.endswith((".", "?", "!", ":")):
            prompt += ":"
        return prompt

    def postprocess(self, text: str) -> str:
        text = text.replace("[EOS]", "")
        text = re.sub(r"\s+", " ", text).strip()
        return text

    def generate(self, prompt: str, **kwargs: Any) -> str:
        seed = kwargs.pop("seed", self.default_seed + self.generation_count)
        self.generation_count += 1
        cleaned_prompt = self.preprocess(prompt)
        raw_output = steadytext.generate(cleaned_prompt, seed=seed, **kwargs)
        return self.postprocess(raw_output)


class ContextualGenerator:
    def __init__(self, context_window: int = 5):
        self.context: deque[str] = deque(maxlen=context_window)
        self.base_seed = 42
        self.generation_count = 0

    def generate_with_context(self, prompt: str, include_context: bool = True) -> str:
        if include_context and self.context:
            context_str = "\n".join(f"Previous: {ctx}" for ctx in self.context)
            full_prompt = f"{context_str}\n\nNow: {prompt}"
        else:
            full_prompt = prompt
        result = steadytext.generate(full_prompt, seed=self.base_seed + self.generation_count)
        self.generation_count += 1
        self.context.append(f"{prompt} -> {result[:100]}...")
        return result


@dataclass
class GenerationMetrics:
    prompt: str
    seed: int
    duration: float
    token_count: int
    cached: bool
    output_preview: str


def generation_monitor() -> None:
    metrics = []
    for prompt in ["Write a Python function", "Write a Python function", "Explain recursion"]:
        start_time = time.time()
        result = steadytext.generate(prompt, seed=42)
        duration = time.time() - start_time
        metrics.append(GenerationMetrics(prompt, 42, duration, len(result.split()), False, result[:50] + "..."))
    assert len(metrics) == 3


def run_all() -> None:
    generate_examples()
    generate_iter_examples()
    deterministic_behavior()
    custom_seed_use_cases()
    fallback_behavior()
    edge_cases()
    assert stream_large_generation("Write a comprehensive guide to Python programming") > 0
    generator = TextGenerator()
    assert generator.generate("write a function") and generator.generate("write a function", seed=100)
    story_gen = ContextualGenerator()
    story_gen.generate_with_context("Once upon a time in a digital kingdom")
    story_gen.generate_with_context("The hero discovered a mysterious artifact")
    generation_monitor()
