"""The original SteadyText ThreadPoolExecutor pattern: the sync API is safe from many threads at once.

python examples/threadpool.py
"""

import concurrent.futures

import steadytext_async as steadytext


def parallel_generation(prompts: list[str], max_workers: int = 4, max_new_tokens: int = 48) -> dict[str, str | None]:
    """Generate text for multiple prompts in parallel."""
    results: dict[str, str | None] = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max_workers) as executor:
        future_to_prompt = {
            executor.submit(steadytext.generate, prompt, seed=idx, max_new_tokens=max_new_tokens): (prompt, idx)
            for idx, prompt in enumerate(prompts)
        }
        for future in concurrent.futures.as_completed(future_to_prompt):
            prompt, idx = future_to_prompt[future]
            try:
                results[prompt] = str(future.result())
                print(f"✓ Completed prompt {idx + 1}: {prompt[:30]}...")
            except Exception as e:
                print(f"✗ Failed prompt {idx + 1}: {e}")
                results[prompt] = None
    return results


PROMPTS = [
    "Write a Python function for sorting",
    "Explain machine learning",
    "Create a REST API example",
    "Describe quantum computing",
]

if __name__ == "__main__":
    for prompt, result in parallel_generation(PROMPTS).items():
        print(f"\n{prompt}:\n{(result or '')[:100]}...\n")
