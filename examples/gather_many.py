"""Generate for many prompts concurrently with asyncio.gather.

python examples/gather_many.py
"""

import asyncio
import time

import steadytext_async as steadytext

PROMPTS = [
    "Explain async/await",
    "Write a coroutine example",
    "Describe event loops",
    "Create an async API client",
]


async def main(max_new_tokens: int = 48) -> list[str]:
    start = time.perf_counter()
    results = await asyncio.gather(*(steadytext.agenerate(p, max_new_tokens=max_new_tokens) for p in PROMPTS))
    print(f"Generated {len(results)} texts in {time.perf_counter() - start:.2f}s")
    for prompt, text in zip(PROMPTS, results, strict=True):
        print(f"\n{prompt}:\n{str(text)[:100]}...")
    await steadytext.aclose()
    return [str(t) for t in results]


if __name__ == "__main__":
    asyncio.run(main())
