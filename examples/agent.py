"""An async agent with two tools (a calculator and a lookup in a small dict) on the embedded model, offline.

python examples/agent.py

The loop: send the conversation and the tools; if the answer is a tool call, run the tool and send its result back
as a ``tool`` message; stop when the model answers in text. The first turn must call a tool
(``tool_choice="required"``: a small model would rather answer from memory); after ``MAX_STEPS`` calls the last
turn is sent with ``tool_choice="none"``, so the loop always ends. Every call is valid (its arguments follow the
tool's schema) and the whole transcript is the same bytes on every run.
"""

import asyncio
import json
import operator
from typing import Any

from steadytext_async import AsyncSteadyText

CAPITALS = {"France": "Paris", "Italy": "Rome", "Japan": "Tokyo", "Kenya": "Nairobi"}
OPS = {"add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "divide": operator.truediv}

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Compute a op b.",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "number"},
                    "op": {"enum": list(OPS)},
                    "b": {"type": "number"},
                },
                "required": ["a", "op", "b"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "capital",
            "description": "The capital city of a country.",
            "parameters": {
                "type": "object",
                "properties": {"country": {"enum": list(CAPITALS)}},
                "required": ["country"],
            },
        },
    },
]
MAX_STEPS = 3
QUESTION = "What is the capital of Japan? Then compute 12 times 7."


def run_tool(name: str, arguments: dict[str, Any]) -> str:
    if name == "calculator":
        try:
            return str(OPS[arguments["op"]](arguments["a"], arguments["b"]))
        except ZeroDivisionError:
            return "error: division by zero"
    return CAPITALS[arguments["country"]]


async def agent(client: AsyncSteadyText, question: str, max_new_tokens: int = 64) -> list[dict[str, Any]]:
    """The whole conversation, from the question to the model's answer."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a helpful assistant. Use the tools, then answer briefly."},
        {"role": "user", "content": question},
    ]
    for step in range(MAX_STEPS + 1):
        choice = "required" if step == 0 else "none" if step == MAX_STEPS else "auto"
        result = await client.generate(
            messages=messages, tools=TOOLS, tool_choice=choice, max_new_tokens=max_new_tokens
        )
        if not result.tool_calls:
            messages.append({"role": "assistant", "content": result.text})
            return messages
        messages.append({"role": "assistant", "content": None, "tool_calls": [c.wire() for c in result.tool_calls]})
        for call in result.tool_calls:
            output = run_tool(call.function.name, json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": output})
    raise AssertionError("unreachable: the last turn cannot call a tool")


async def main() -> list[dict[str, Any]]:
    async with AsyncSteadyText() as client:
        transcript = await agent(client, QUESTION)
    print(render(transcript), end="")
    return transcript


def render(transcript: list[dict[str, Any]]) -> str:
    """One JSON object per line, as ``main`` prints it."""
    return "".join(json.dumps(message, ensure_ascii=False, sort_keys=True) + "\n" for message in transcript)


if __name__ == "__main__":
    asyncio.run(main())
