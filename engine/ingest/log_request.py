"""One JSON log row to a LogRequest under a known format, or a RowError naming the field
and how to fix it.

The formats (``engine.ingest.logs`` lists them) differ in where the prompt is: ``messages`` or
``prompt`` at the top (chat_jsonl, prompt_jsonl), under ``body`` (openai_batch) or under
``request`` (proxy_jsonl, whose ``response`` is the logged output). Every format also reads
``id`` (``custom_id`` first), a reference (the first of ``REFERENCE_KEYS`` present, any case),
a logged output (``OUTPUT_KEYS``), ``usage`` token counts and ``metadata``; other top-level
scalars (a second reference-named key too) become metadata. A chat prompt ends at the last
user message; an assistant reply after it is the logged output unless one is given.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from engine.core.domain import LogRequest
from engine.core.errors import RowError
from engine.ingest.log_read import MAX_STORED_INT, excerpt

ROLES = ("system", "user", "assistant", "tool", "developer")
# Names of the reference answer in every format (JSON keys and CSV columns, any case), in
# order of precedence when a row has several: names that can only mean the reference first,
# the generic "answer" and "label" (often a category or a model's answer) last.
REFERENCE_KEYS = ("reference", "expected_answer", "expected_output", "expected", "ground_truth",
                  "gold_answer", "gold", "ideal", "target", "answer", "label")
OUTPUT_KEYS = ("output", "response", "completion")

# Top-level JSON keys that are read as fields, so never copied into metadata; so is the key a
# row's reference came from (reference_key), while another reference-named key stays metadata.
READ_KEYS = frozenset({
    "id", "custom_id", "metadata", "usage", "messages", "prompt", "system",
    "method", "url", "body", "request", "response", *OUTPUT_KEYS,
})
_REFERENCE_NAMES = frozenset(REFERENCE_KEYS)
_CONTAINER_KEYS = {"openai_batch": "body", "proxy_jsonl": "request"}  # where the prompt is
_Messages = tuple[dict[str, str], ...]
_ROLE_NAMES = {role: role for role in ROLES}


def json_request(obj: dict[str, Any], fmt: str, line: int,
                 candidates: tuple[str, ...] | None = None) -> LogRequest:
    """The request in JSON row ``obj`` (on ``line``) read as format ``fmt``; RowError if unusable.
    ``candidates``: ``reference_candidates(obj)`` when the caller has it (rows share key sets)."""
    key = _CONTAINER_KEYS.get(fmt)
    source = _container(obj, key) if key else obj
    messages, chat_output = _prompt_messages(source, f"{key}." if key else "")
    if fmt == "proxy_jsonl":
        output = _response_text(obj.get("response")) or _text_field(obj, ("output", "completion"))
    else:
        output = _text_field(obj, OUTPUT_KEYS) or chat_output
    prompt_tokens, output_tokens = _usage(obj)
    ref_key = reference_key(obj, candidates)
    return LogRequest(
        line=line,
        messages=messages,
        reference=_text_field(obj, (ref_key,)) if ref_key is not None else None,
        logged_output=output,
        logged_prompt_tokens=prompt_tokens,
        logged_output_tokens=output_tokens,
        request_id=_text_field(obj, ("custom_id", "id")),
        metadata=_metadata(obj, source, ref_key),
    )


def reference_candidates(keys: Iterable[str]) -> tuple[str, ...]:
    """The keys that name a reference, in the order they are tried: REFERENCE_KEYS order
    (any case), the exact spelling before other cases."""
    by_name: dict[str, list[str]] = {}
    for key in keys:
        name = key.lower()
        if name in _REFERENCE_NAMES:
            by_name.setdefault(name, []).append(key)
    return tuple(key for name in REFERENCE_KEYS
                 for key in sorted(by_name.get(name, ()), key=lambda key: key != name))


def reference_key(obj: dict[str, Any], candidates: tuple[str, ...] | None = None) -> str | None:
    """The key of ``obj`` its reference is read from: the first candidate whose value is not
    null (``candidates``: ``reference_candidates(obj)``, computed when not given)."""
    for key in reference_candidates(obj) if candidates is None else candidates:
        if obj[key] is not None:
            return key
    return None


def _container(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        got = "it is missing" if key not in obj else f"got {describe(value)}"
        raise RowError(key, f'must be an object holding "messages" or "prompt" ({got})')
    return value


def _prompt_messages(source: dict[str, Any], prefix: str) -> tuple[_Messages, str | None]:
    """The prompt as chat messages, plus a logged reply found after the last user message."""
    if "messages" in source:
        return _chat_messages(source["messages"], prefix + "messages")
    if "prompt" in source:
        return _plain_prompt(source, prefix), None
    raise RowError(prefix + "messages", 'no "messages" or "prompt"; give the chat as '
                    '"messages": [{"role": "user", "content": "..."}] or the text as "prompt"')


def _plain_prompt(source: dict[str, Any], prefix: str) -> _Messages:
    prompt, system = source["prompt"], source.get("system")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RowError(prefix + "prompt", f"must be a non-empty string (got "
                        f"{describe(prompt)}); put the prompt text in it")
    if system is not None and not isinstance(system, str):
        raise RowError(prefix + "system", f"must be a string (got {describe(system)})")
    user = {"role": "user", "content": prompt}
    return ({"role": "system", "content": system}, user) if system and system.strip() else (user,)


def _chat_messages(value: Any, field: str) -> tuple[_Messages, str | None]:
    if not isinstance(value, list) or not value:
        raise RowError(field, 'must be a non-empty list of {"role", "content"} objects '
                        f"(got {describe(value)})")
    messages = tuple(_message(item, field, i) for i, item in enumerate(value))
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise RowError(field, 'has no user message; add the request as {"role": "user", '
                        '"content": "..."}')
    last = users[-1]
    if not messages[last]["content"].strip():
        raise RowError(f"{field}[{last}].content",
                        "the last user message is empty; put the request text in it")
    replies = [m["content"] for m in messages[last + 1:] if m["role"] == "assistant"]
    reply = replies[-1] if replies and replies[-1].strip() else None
    return messages[: last + 1], reply


def _message(item: Any, field_prefix: str, index: int) -> dict[str, str]:
    """One chat message as {"role", "content"}. Roles are the shared ROLES strings and system
    prompts are interned (freed with their last user), so a big log repeating one system
    prompt holds its text once."""
    content = item.get("content") if isinstance(item, dict) else None
    role = _ROLE_NAMES.get(item.get("role")) if isinstance(item, dict) and isinstance(
        item.get("role"), str) else None
    if role is not None and isinstance(content, str):
        return {"role": role, "content": sys.intern(content) if role == "system" else content}
    field = f"{field_prefix}[{index}]"
    if not isinstance(item, dict):
        raise RowError(field, f'must be an object {{"role": ..., "content": ...}} '
                        f"(got {describe(item)})")
    role = item.get("role")
    if role not in ROLES:
        got = "it is missing" if "role" not in item else f"got {excerpt(role)}"
        raise RowError(f"{field}.role", f"must be one of {', '.join(ROLES)} ({got})")
    return {"role": role, "content": _content_text(item.get("content"), f"{field}.content")}


def _content_text(content: Any, field: str) -> str:
    """Message content as text; a list of OpenAI text parts is joined with newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RowError(field, f"must be a string or a list of text parts "
                        f"(got {describe(content)})")
    texts = []
    for i, part in enumerate(content):
        if not (isinstance(part, dict) and part.get("type") == "text"
                and isinstance(part.get("text"), str)):
            raise RowError(f"{field}[{i}]", 'only text parts {"type": "text", "text": "..."} '
                            "can be replayed; remove image, audio and other parts")
        texts.append(part["text"])
    return "\n".join(texts)


def _response_text(response: Any) -> str | None:
    """Text of a proxied response: a string, choices[0].message.content or choices[0].text.

    Other shapes (e.g. a logged error object) mean no logged output; the request is kept.
    """
    if isinstance(response, str):
        return response if response.strip() else None
    choices = response.get("choices") if isinstance(response, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message")
    text = message.get("content") if isinstance(message, dict) else choices[0].get("text")
    if isinstance(text, list):
        text = _content_text(text, "response.choices[0].message.content")
    return text if isinstance(text, str) and text.strip() else None


def _text_field(obj: dict[str, Any], keys: Sequence[str]) -> str | None:
    """The first of ``keys`` present and not null, as text (numbers and booleans as in JSON)."""
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if not isinstance(value, (str, int, float)):  # bool is an int
            raise RowError(key, f"must be a string (got {describe(value)}); give it as text")
        text = value if isinstance(value, str) else json.dumps(value)
        return text if text.strip() else None
    return None


def _usage(obj: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = obj.get("usage")
    if usage is None and isinstance(obj.get("response"), dict):
        usage = obj["response"].get("usage")
    if usage is None:
        return None, None
    if not isinstance(usage, dict):
        raise RowError("usage", f'must be an object like {{"prompt_tokens": 12, '
                        f'"completion_tokens": 5}} (got {describe(usage)})')
    return _token_count(usage, "prompt_tokens"), _token_count(usage, "completion_tokens")


def _token_count(usage: dict[str, Any], key: str) -> int | None:
    value = usage.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)
                         and 0 <= value <= MAX_STORED_INT):
        return value
    raise RowError(f"usage.{key}", f"must be a non-negative integer of at most "
                    f"{MAX_STORED_INT} (got {excerpt(value)}); fix the count or remove it")


def _metadata(obj: dict[str, Any], source: dict[str, Any], ref_key: str | None
              ) -> dict[str, Any]:
    given = obj.get("metadata")
    if given is not None and not isinstance(given, dict):
        raise RowError("metadata", f"must be an object of extra fields (got {describe(given)})")
    scalars = {
        key: value for key, value in obj.items()
        if key not in READ_KEYS and key != ref_key
        and (value is None or isinstance(value, (str, int, float)))
    }
    if isinstance(source.get("model"), str):
        scalars.setdefault("model", source["model"])
    return {**scalars, **(given or {})}


_JSON_TYPES = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
               int: "a number", float: "a number", type(None): "null"}


def describe(value: Any) -> str:
    """A JSON value's type in JSON words, for messages."""
    blank = isinstance(value, str) and not value.strip()
    return "an empty string" if blank else _JSON_TYPES[type(value)]
