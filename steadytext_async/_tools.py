"""Tools in OpenAI's shape: checked and made canonical once, before any work; the one tool-call format.

``tools`` is ``[{"type": "function", "function": {"name", "description"?, "parameters"?}}]``; ``tool_choice`` is
``"auto"`` (the default with tools), ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name"}}``.
A tool's ``parameters`` must be a JSON schema the structured-output layer can enforce (it is made canonical the
same way ``schema=`` is), names must be distinct and match ``[A-Za-z0-9_-]{1,64}``.

The format (for chat templates without a tool format of their own; Hermes/Qwen style): the tools are described in
a system block (:func:`tools_prompt`), a call is written as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n
</tool_call>`` (one call per turn), earlier calls are rendered the same way in assistant turns, and tool results
are user turns ``<tool_response>\\n...\\n</tool_response>``. Local generation is constrained by ONE llguidance
grammar (:func:`tool_constraint`): plain text that does not start with ``<`` or a call whose name is one of the
tools and whose arguments validate against its schema (``auto``), or a call only (``required``, a named tool).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from ._exceptions import ConstraintError, InvalidRequestError
from ._unicode import check_text
from .structured import Constraint
from .structured._constraint import canonical_json

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "FunctionCall",
    "NamedToolChoice",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolFunction",
    "call_id",
    "check_tool_choice",
    "check_tools",
    "parse_calls",
    "tool_constraint",
    "tools_prompt",
]

_FROZEN = ConfigDict(frozen=True, extra="forbid", defer_build=True)
_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOLS = 128
CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "coerce_one_of": True}


class ToolFunction(BaseModel):
    """A function tool: its name, description and canonical ``parameters`` JSON schema."""

    model_config = _FROZEN

    name: str
    description: str | None = None
    parameters: dict[str, Any]

    def wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name}
        if self.description is not None:
            body["description"] = self.description
        body["parameters"] = self.parameters
        return body


class Tool(BaseModel):
    """One tool (``{"type": "function", "function": {...}}``)."""

    model_config = _FROZEN

    type: Literal["function"] = "function"
    function: ToolFunction

    def wire(self) -> dict[str, Any]:
        return {"type": "function", "function": self.function.wire()}


class NamedToolChoice(BaseModel):
    """``{"type": "function", "function": {"name": ...}}``: this tool must be called."""

    model_config = _FROZEN

    name: str

    def wire(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name}}


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice


class FunctionCall(BaseModel):
    """The function a call names and its arguments (a JSON object, as a string)."""

    model_config = _FROZEN

    name: str
    arguments: str


class ToolCall(BaseModel):
    """One tool call in OpenAI's shape."""

    model_config = _FROZEN

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.function.name, "arguments": self.function.arguments},
        }


# -- checking ---------------------------------------------------------------------------------------------------


def _dump(value: object) -> object:
    return value.model_dump(exclude_none=True) if isinstance(value, BaseModel) else value


def _name(where: str, value: object) -> str:
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise InvalidRequestError(f"{where} must be a string matching [A-Za-z0-9_-]{{1,64}}, got {value!r:.80}")
    return str.__str__(value)


def _tool(i: int, value: object) -> Tool:
    from .structured.normalize import _schema_constraint

    where = f"tools[{i}]"
    value = _dump(value)
    if not isinstance(value, Mapping):
        raise InvalidRequestError(f"{where} must be an object, got {type(value).__name__}")
    if value.get("type", "function") != "function":
        raise InvalidRequestError(f"{where}.type must be 'function', got {value.get('type')!r:.80}")
    unknown = sorted(str(k) for k in set(value) - {"type", "function"})
    if unknown:
        raise InvalidRequestError(f"{where} has unsupported fields: {', '.join(unknown)}")
    fn = _dump(value.get("function"))
    if not isinstance(fn, Mapping):
        raise InvalidRequestError(f'{where} needs "function": {{"name": ..., "parameters": {{...}}}}')
    unknown = sorted(str(k) for k in set(fn) - {"name", "description", "parameters", "strict"})
    if unknown:
        raise InvalidRequestError(f"{where}.function has unsupported fields: {', '.join(unknown)}")
    if "name" not in fn:
        raise InvalidRequestError(f"{where}.function has no name")
    name = _name(f"{where}.function.name", fn["name"])
    description = fn.get("description")
    if description is not None:
        if not isinstance(description, str):
            raise InvalidRequestError(f"{where}.function.description must be a string")
        check_text(f"{where}.function.description", description)
        description = str.__str__(description)
    parameters = fn.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, Mapping):
        raise InvalidRequestError(f"{where}.function.parameters must be a JSON schema object")
    try:
        schema = _schema_constraint(parameters).schema
    except InvalidRequestError as exc:
        raise InvalidRequestError(f"{where}.function.parameters: {exc}") from None
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(f"{where}.function.parameters must describe an object (type: object)")
    function = ToolFunction.model_construct(name=name, description=description, parameters=schema)
    return Tool.model_construct(type="function", function=function)


def check_tools(value: object) -> tuple[Tool, ...] | None:
    """``value`` (OpenAI-shaped tools, or None) as canonical tools, or :class:`InvalidRequestError`."""
    if value is None:
        return None
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence):
        raise InvalidRequestError(f"tools must be a list of tools, got {type(value).__name__}")
    if not value:
        return None  # OpenAI's clients send [] for "no tools"
    if len(value) > MAX_TOOLS:
        raise InvalidRequestError(f"tools holds {len(value)} tools; the limit is {MAX_TOOLS}")
    tools = tuple(_tool(i, t) for i, t in enumerate(value))
    seen: set[str] = set()
    for tool in tools:
        if tool.function.name in seen:
            raise InvalidRequestError(f"tools: the name {tool.function.name!r} is used twice")
        seen.add(tool.function.name)
    return tools


def check_tool_choice(value: object, tools: tuple[Tool, ...] | None) -> ToolChoice | None:
    """The canonical ``tool_choice`` (None without tools), or :class:`InvalidRequestError`."""
    value = _dump(value)
    if tools is None:
        if value in (None, "none"):
            return None
        raise InvalidRequestError(f"tool_choice={value!r:.80} needs tools")
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        return value
    if isinstance(value, Mapping) and value.get("type") == "function" and isinstance(value.get("function"), Mapping):
        name = _name("tool_choice.function.name", value["function"].get("name"))
        if name not in {t.function.name for t in tools}:
            raise InvalidRequestError(f"tool_choice names {name!r}, which is not one of the tools")
        return NamedToolChoice.model_construct(name=name)
    raise InvalidRequestError(
        "tool_choice must be 'auto', 'none', 'required' or "
        f'{{"type": "function", "function": {{"name": ...}}}}, got {value!r:.80}'
    )


# -- the format: prompt, grammar, parsing -----------------------------------------------------------------------


def _call_json(name: str, arguments: object) -> str:
    return json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)


def loads_or_text(function: Mapping[str, Any]) -> Any:
    """A call's arguments decoded (Hugging Face templates take them as an object), or as given if not JSON."""
    try:
        return json.loads(function["arguments"])
    except (ValueError, TypeError):
        return function["arguments"]


def call_text(name: str, arguments: str) -> str:
    """How a call is written in the output (and in earlier assistant turns)."""
    return CALL_OPEN + _call_json(name, loads_or_text({"arguments": arguments})) + CALL_CLOSE


def tools_prompt(tools: Sequence[Mapping[str, Any]], choice: object) -> str:
    """The system block describing ``tools`` (wire dicts) for templates without a tool format."""
    lines = [
        "# Tools",
        "",
        "You may call one of the following tools. To call a tool, answer with nothing but:",
        "<tool_call>",
        '{"name": <tool name>, "arguments": <arguments as a JSON object>}',
        "</tool_call>",
        "A tool's result comes back in <tool_response></tool_response> tags. When you can answer, answer in plain "
        "text.",
    ]
    if choice == "required":
        lines.append("You must call a tool now.")
    elif isinstance(choice, Mapping):
        lines.append(f"You must call the tool {choice['function']['name']} now.")
    lines += ["", "<tools>", *(json.dumps(t, ensure_ascii=False) for t in tools), "</tools>"]
    return "\n".join(lines)


def plain_chat(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None, choice: object
) -> list[dict[str, str]]:
    """``messages`` (template dicts, maybe with ``tool_calls``/``tool`` turns) for a template with no tool format:
    the tools as a system block, calls written in the documented format, tool results as user turns."""
    out: list[dict[str, str]] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
            continue
        item = {"role": role, "content": content}
        if m.get("tool_calls"):
            calls = [call_text(c["function"]["name"], c["function"]["arguments"]) for c in m["tool_calls"]]
            item["content"] = "\n".join([content, *calls] if content else calls)
        if "name" in m:
            item["name"] = m["name"]
        out.append(item)
    if tools and choice != "none":
        block = tools_prompt(tools, choice)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + block}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def render(
    formatter: Any,
    template: str,
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    choice: object,
) -> str:
    """The prompt a chat ``formatter`` (llama-cpp-python's Jinja2ChatFormatter over ``template``) renders: a
    template with a tool format of its own gets the tools and the tool turns natively (call arguments decoded, as
    Hugging Face templates take them); any other gets them in the documented format (:func:`plain_chat`). Without
    tools or tool turns, the messages as they are."""
    items = [dict(m) for m in messages]
    if not tools and not any(m.get("tool_calls") or m["role"] == "tool" for m in items):
        return str(formatter(messages=items).prompt)
    if not template_has_tools(template):
        return str(formatter(messages=plain_chat(items, tools, choice)).prompt)
    for m in items:
        if m.get("tool_calls"):
            m["tool_calls"] = [
                {**c, "function": {**c["function"], "arguments": loads_or_text(c["function"])}} for c in m["tool_calls"]
            ]
    return str(formatter(messages=items, tools=list(tools) if tools and choice != "none" else None).prompt)


def template_has_tools(template: str) -> bool:
    """Whether a chat template renders ``tools`` itself (Hermes/Qwen-style templates do)."""
    return re.search(r"\btools\b", template) is not None


def tool_constraint(tools: tuple[Tool, ...], choice: ToolChoice) -> Constraint | None:
    """The grammar local generation follows (None for ``tool_choice="none"``)."""
    if choice == "none":
        return None
    chosen = [t for t in tools if not isinstance(choice, NamedToolChoice) or t.function.name == choice.name]
    key = canonical_json([[t.function.name, t.function.parameters] for t in chosen])
    return _constraint(key, choice == "auto")


@functools.lru_cache(maxsize=256)
def _constraint(key: str, text_allowed: bool) -> Constraint:
    from .structured.grammar import close_objects

    rules = []
    for i, (name, parameters) in enumerate(json.loads(key)):
        schema = {
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": close_objects(parameters)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
            "x-guidance": _JSON_OPTIONS,
        }
        rules.append(f"tool{i}: %json {json.dumps(schema, ensure_ascii=False)}")
    names = " | ".join(f"tool{i}" for i in range(len(rules)))
    start = "start: TEXT | call" if text_allowed else "start: call"
    grammar = "\n".join(
        [
            start,
            f"call: {json.dumps(CALL_OPEN)} body {json.dumps(CALL_CLOSE)}",
            f"body: {names}",
            *rules,
            *([r'TEXT: /[^<](.|\n)*/ | ""'] if text_allowed else []),
        ]
    )
    return Constraint("lark", canonical_json({"kind": "lark", "grammar": grammar}))


def call_id(seed: str, text: str, index: int) -> str:
    """A call's id: derived from the request (its cache key or input hash), the output and the call's index."""
    digest = hashlib.sha256(f"{seed}\0{index}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()
    return "call_" + digest[:24]


def check_calls(tools: tuple[Tool, ...], calls: Sequence[ToolCall], text: str = "") -> None:
    """Each call names one of ``tools`` and its arguments validate against that tool's schema, else
    :class:`ConstraintError` (remote calls are checked like local ones)."""
    from .structured.validate import check_output

    by_name = {t.function.name: t for t in tools}
    for call in calls:
        tool = by_name.get(call.function.name)
        if tool is None:
            raise ConstraintError(f"the tool call names {call.function.name!r:.80}, not a tool", partial_text=text)
        schema = tool.function.parameters
        check_output(
            Constraint("json_schema", canonical_json({"kind": "json_schema", "schema": schema})),
            call.function.arguments,
        )


def parse_calls(tools: tuple[Tool, ...], choice: ToolChoice, text: str, seed: str) -> tuple[ToolCall, ...] | None:
    """The calls in a local output (None: plain text); each is checked against its tool's schema, so a call that
    does not parse or validate is a :class:`ConstraintError` (the guarantee, checked like structured output)."""
    forced = choice != "auto"
    if not text.startswith("<"):
        if forced:
            raise ConstraintError("the output is not a tool call, but tool_choice requires one", partial_text=text)
        return None
    if not (text.startswith(CALL_OPEN) and text.endswith(CALL_CLOSE)):
        raise ConstraintError("the output is an incomplete tool call (raise max_new_tokens)", partial_text=text)
    body = text[len(CALL_OPEN) : -len(CALL_CLOSE)]
    try:
        call = json.loads(body)
    except ValueError as exc:
        raise ConstraintError(f"the tool call is not valid JSON: {exc}", partial_text=text) from None
    by_name = {t.function.name: t for t in tools}
    if not isinstance(call, dict) or set(call) != {"name", "arguments"} or call["name"] not in by_name:
        raise ConstraintError("the tool call does not name one of the tools", partial_text=text)
    if isinstance(choice, NamedToolChoice) and call["name"] != choice.name:
        raise ConstraintError(f"the tool call does not name {choice.name!r}", partial_text=text)
    function = FunctionCall(name=call["name"], arguments=json.dumps(call["arguments"], ensure_ascii=False))
    calls = (ToolCall(id=call_id(seed, text, 0), function=function),)
    check_calls(tools, calls, text)
    return calls
