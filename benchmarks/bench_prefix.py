"""Prompt-prefix reuse: a 10-turn chat with a ~2,000-token system prompt, reuse on vs off in one run, and
llama-cpp-python's own prefix reuse beside them.

Prints one JSON line per figure. Ratios are what matter; absolute times on a shared machine are noise.

    python benchmarks/bench_prefix.py            # full run: 10 turns, ~2,000-token system prompt, 3 rounds
    python benchmarks/bench_prefix.py --quick    # bounded form used by the test suite

Every round is a new conversation (its system prompt starts with the round number, so nothing carries over between
rounds); within a turn the modes run one after another on the same messages (the history holds the reuse-off
answers, so every mode sees the same prompts). Modes:
- ``off``: the SDK with ``prefix_cache_mb=0``; ``on``: the SDK with prefix reuse (the default);
- ``peer_reuse``: one ``llama_cpp.Llama`` kept across turns (it evaluates only the suffix after the previous prompt);
  ``peer_fresh``: another ``Llama`` with ``reset()`` before every call. Their texts are compared turn by turn.

Figures:
- prefix_ttft: per turn, median time to first token per mode; ratio off/on for turns 2..N (target >= 3) and
  ``identical`` (on and off texts, token ids and logprobs equal on every turn and round);
- prefix_conversation: whole-conversation time per mode, ratio off/on (target >= 2);
- prefix_peer_changes: turns whose text changed with llama-cpp-python's own reuse vs reset (of turns compared).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import steadytext_async as st

QUESTIONS = [
    "Hello! What do you help with?",
    "How much does a 3 kg parcel to zone 2 cost?",
    "And how long does it take?",
    "Can I insure a parcel worth 250 euros?",
    "What are the opening hours on Saturday?",
    "Is there a discount for ten parcels?",
    "How do I return an item?",
    "What happens if nobody is home?",
    "Can I change the address after sending?",
    "Thanks, please summarise in one sentence.",
]


def system_prompt(round_no: int, rules: int) -> str:
    lines = [f"Session {round_no}. You are the support assistant of Parcelia, a shipping company. Be brief."]
    for i in range(rules):
        zone, kg = i % 7 + 1, i % 13 + 1
        lines.append(
            f"Rule {i + 1}: a parcel to zone {zone} weighing up to {kg} kg costs {3 + zone + kg // 2} euros and "
            f"arrives within {1 + (zone + i) % 5} working days; tracking code prefix PX{i:03d}."
        )
    return "\n".join(lines)


def emit(name: str, **fields: Any) -> None:
    print(json.dumps({"figure": name, **fields}), flush=True)


async def sdk_turn(client: st.AsyncSteadyText, messages: list[dict[str, str]], tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = None
    chunks: list[st.Chunk] = []
    result = None
    async for item in client.stream(messages=messages, max_new_tokens=tokens, return_logprobs=True):
        if first is None:
            first = time.perf_counter() - t0
        if isinstance(item, st.Chunk):
            chunks.append(item)
        else:
            result = item
    total = time.perf_counter() - t0
    assert result is not None
    key = (result.token_ids, [lp.logprob for lp in result.logprobs or []])
    return {"ttft": first or total, "total": total, "text": result.text, "key": key, "usage": result.usage}


def peer_turn(llm: Any, messages: list[dict[str, str]], tokens: int, fresh: bool) -> dict[str, Any]:
    if fresh:
        llm.reset()
    t0 = time.perf_counter()
    first = None
    text = ""
    for part in llm.create_chat_completion(messages=messages, max_tokens=tokens, temperature=0.0, stream=True):
        delta = part["choices"][0]["delta"].get("content") or ""
        if delta and first is None:
            first = time.perf_counter() - t0
        text += delta
    total = time.perf_counter() - t0
    return {"ttft": first or total, "total": total, "text": text}


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="bounded run for CI")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--rules", type=int, default=55, help="system prompt size (55 rules: about 2,000 tokens)")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.turns, args.rules, args.tokens, args.rounds = 4, 20, 8, 1
    common = {
        "workers": 1,
        "threads": args.threads,
        "cache_disabled": True,
        "strict": True,
        "start_timeout": 900.0,
        "max_batch": 1,
        "host_budget": False,  # other processes on a shared host must not hold the run back
    }
    modes = ["off", "on"] + ([] if args.no_peer else ["peer_fresh", "peer_reuse"])
    ttft: dict[str, list[list[float]]] = {m: [[] for _ in range(args.turns)] for m in modes}
    convo: dict[str, list[float]] = {m: [] for m in modes}
    identical, prompt_tokens, cached = True, [], []
    peer_changed = peer_compared = 0
    async with (
        st.AsyncSteadyText(prefix_cache_mb=0, **common) as off,
        st.AsyncSteadyText(prefix_cache_mb=256, **common) as on,
    ):
        peers: dict[str, Any] = {}
        if not args.no_peer:
            from llama_cpp import Llama

            from steadytext_async._registry import embedded_model

            path = str(embedded_model().path)
            for m in ("peer_fresh", "peer_reuse"):
                peers[m] = Llama(path, n_ctx=8192, n_batch=512, n_threads=args.threads, verbose=False)
        for r in range(args.rounds):
            messages = [{"role": "system", "content": system_prompt(r, args.rules)}]
            totals = dict.fromkeys(modes, 0.0)
            for turn in range(args.turns):
                messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
                got: dict[str, dict[str, Any]] = {}
                got["off"] = await sdk_turn(off, messages, args.tokens)
                got["on"] = await sdk_turn(on, messages, args.tokens)
                for m, llm in peers.items():
                    got[m] = peer_turn(llm, messages, args.tokens, fresh=m == "peer_fresh")
                identical &= got["on"]["text"] == got["off"]["text"] and got["on"]["key"] == got["off"]["key"]
                if peers:
                    peer_compared += 1
                    peer_changed += got["peer_reuse"]["text"] != got["peer_fresh"]["text"]
                for m in modes:
                    ttft[m][turn].append(got[m]["ttft"])
                    totals[m] += got[m]["total"]
                messages.append({"role": "assistant", "content": got["off"]["text"]})
            for m in modes:
                convo[m].append(totals[m])
        # usage of the last turn: how much of the prompt the on-client restored
        last = await on.generate(messages=messages[:-1], max_new_tokens=1)
        prompt_tokens.append(last.usage.prompt_tokens)
        cached.append(last.usage.prompt_tokens_cached)
        for llm in peers.values():
            llm.close()

    med = {m: [statistics.median(t) for t in ttft[m]] for m in modes}
    later = range(1, args.turns)
    ratio_turns = [med["off"][t] / med["on"][t] for t in later]
    emit(
        "prefix_ttft",
        turns=args.turns,
        rounds=args.rounds,
        system_rules=args.rules,
        median_ttft_s={m: [round(x, 3) for x in med[m]] for m in modes},
        ratio_off_on_turns_2_n=[round(x, 2) for x in ratio_turns],
        ratio_off_on_turns_2_n_median=round(statistics.median(ratio_turns), 2),
        ratio_off_on_turns_2_n_min=round(min(ratio_turns), 2),
        ratio_off_on_turn_1=round(med["off"][0] / med["on"][0], 2),
        peer_reuse_vs_fresh_turns_2_n_median=round(
            statistics.median(med["peer_fresh"][t] / med["peer_reuse"][t] for t in later), 2
        )
        if peers
        else None,
        identical=identical,
        last_turn_prompt_tokens=prompt_tokens[-1],
        last_turn_cached_tokens=cached[-1],
        target=">= 3 (turns 2..N)",
    )
    conv = {m: statistics.median(v) for m, v in convo.items()}
    emit(
        "prefix_conversation",
        median_s={m: round(v, 2) for m, v in conv.items()},
        spread_s={m: [round(min(v), 2), round(max(v), 2)] for m, v in convo.items()},
        ratio_off_on=round(conv["off"] / conv["on"], 2),
        target=">= 2",
    )
    if peers:
        emit("prefix_peer_changes", changed_turns=peer_changed, compared_turns=peer_compared)


if __name__ == "__main__":
    asyncio.run(main())
