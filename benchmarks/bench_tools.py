"""Tool-call decode speed: a constrained tool call vs unconstrained decoding of the same number of tokens.

The worker's own decode loop (``SequenceDecoder`` driven by ``LlamaModel.run``) on the default embedded chat model,
greedy, one thread, the prompt rendered by the model's chat template in the documented tool format. Each round
decodes the call (tool_choice="required", two tools) and then the same prompt unconstrained with ``max_new_tokens``
set to the call's length (end token suppressed by sampling to the limit: the tokens decoded are the same count).
Rounds are interleaved; the figure is the median ratio of decode tokens per second (constrained / unconstrained),
with its spread. Prints one JSON line.

    .venv/bin/python benchmarks/bench_tools.py [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import TYPE_CHECKING, cast

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from steadytext_async._registry import embedded_model
from steadytext_async._tools import plain_chat, tool_constraint
from steadytext_async._validate import build_request
from steadytext_async._worker.child.decode import SequenceDecoder
from steadytext_async._worker.child.llama import LlamaModel
from steadytext_async._worker.child.sampling import Sampler
from steadytext_async.structured import MatcherFactory

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["C", "F"]}},
                "required": ["city", "unit"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 80}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
]


def _greedy() -> Sampler:
    return Sampler(temperature=0.0, seed=42, top_k=40, top_p=0.95, min_p=0.05)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    spec = embedded_model()
    model = LlamaModel(str(spec.path), n_ctx=2048, n_batch=256, n_threads=args.threads)
    factory = MatcherFactory(model.model)
    messages = [{"role": "user", "content": "What is the weather in Paris, in Celsius?"}]
    request = build_request(messages=messages, tools=TOOLS, tool_choice="required")
    assert request.tools is not None and request.tool_choice is not None
    constraint = tool_constraint(request.tools, request.tool_choice)
    assert constraint is not None
    template = model.metadata["tokenizer.chat_template"]
    eos = model.piece(model.token_eos()).decode()
    bos = model.piece(model.token_bos()).decode()
    text = Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos)(
        messages=cast("list[ChatCompletionRequestMessage]", plain_chat(messages, request.tools_wire(), "required"))
    ).prompt
    prompt = model.tokenize(text.encode(), add_bos=False, special=True)
    factory.matcher(constraint)  # compile once (cached per worker), outside the timing
    ratios, call_tps, free_tps = [], [], []
    n_tokens = 0
    for _ in range(args.rounds):
        dec = SequenceDecoder(model, max_new_tokens=256, sampler=_greedy(), matcher=factory.matcher(constraint))
        seconds = model.run(prompt, dec)
        n_tokens = len(dec.ids)
        tps_call = n_tokens / seconds
        free = SequenceDecoder(model, max_new_tokens=n_tokens, sampler=_greedy(), matcher=None)
        free_seconds = model.run(prompt, free)
        tps_free = len(free.ids) / free_seconds
        # the unconstrained run may stop early at the end token: compare per-token speed either way
        ratios.append(tps_call / tps_free)
        call_tps.append(tps_call)
        free_tps.append(tps_free)
    print(
        json.dumps(
            {
                "bench": "tools_decode_speed",
                "model": spec.name,
                "call_tokens": n_tokens,
                "call_text": dec.text(),
                "rounds": args.rounds,
                "tok_s_call_median": round(statistics.median(call_tps), 1),
                "tok_s_free_median": round(statistics.median(free_tps), 1),
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_min": round(min(ratios), 3),
                "ratio_max": round(max(ratios), 3),
            }
        )
    )


if __name__ == "__main__":
    main()
