"""Build data/samples/long_context_support.jsonl from the hand-written sources in
data/samples/long_context_support/ (manual.md and conversations.json).

Each line is one chat request in the format roilab reads (chat_jsonl): a system message (a
one-line instruction plus the whole manual: the same bytes on every line, the prefix a prefix
cache can reuse), the earlier turns of the conversation, the customer's final message, and a
short reference answer. Deterministic, standard library only.

    python data/samples/make_long_context.py           # (re)write the .jsonl
    python data/samples/make_long_context.py --check   # exit 1 if the .jsonl is out of date
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "long_context_support"
TARGET = HERE / "long_context_support.jsonl"
INSTRUCTION = ("You are the support assistant for {product}. Answer the customer's last message "
               "in one or two sentences, using only the manual below.")


def system_message(product: str, manual: str) -> str:
    return INSTRUCTION.format(product=product) + "\n\n" + manual.strip() + "\n"


def _check_conversation(conv: dict, seen: set[str]) -> None:
    cid = conv.get("id")
    if not isinstance(cid, str) or not cid or cid in seen:
        raise ValueError(f"conversation id {cid!r} is missing or repeated")
    seen.add(cid)
    history = conv.get("history")
    if not isinstance(history, list) or len(history) % 2 or not history:
        raise ValueError(f"{cid}: history must be a non-empty list of user/assistant pairs")
    for i, turn in enumerate(history):
        want = "user" if i % 2 == 0 else "assistant"
        if turn.get("role") != want or not str(turn.get("content", "")).strip():
            raise ValueError(f"{cid}: turn {i + 1} must be a non-empty {want} message")
    for key in ("issue", "reference"):
        if not str(conv.get(key, "")).strip():
            raise ValueError(f"{cid}: {key} is empty")


def render() -> bytes:
    """The .jsonl's bytes, from the sources."""
    manual = (SOURCE / "manual.md").read_text(encoding="utf-8")
    data = json.loads((SOURCE / "conversations.json").read_text(encoding="utf-8"))
    system = system_message(data["product"], manual)
    seen: set[str] = set()
    lines = []
    for conv in data["conversations"]:
        _check_conversation(conv, seen)
        messages = [{"role": "system", "content": system}]
        messages += [{"role": t["role"], "content": t["content"]} for t in conv["history"]]
        messages.append({"role": "user", "content": conv["issue"]})
        row = {"id": conv["id"], "messages": messages, "reference": conv["reference"],
               "metadata": {"topic": conv["topic"], "channel": "in_app_chat",
                            "history_turns": len(conv["history"])}}
        lines.append(json.dumps(row, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the .jsonl differs from what would be written")
    args = parser.parse_args(argv)
    want = render()
    if args.check:
        have = TARGET.read_bytes() if TARGET.exists() else None
        if have != want:
            print(f"{TARGET.name} is out of date: run python data/samples/make_long_context.py",
                  file=sys.stderr)
            return 1
        print(f"{TARGET.name} is up to date")
        return 0
    TARGET.write_bytes(want)
    n = want.count(b"\n")
    print(f"wrote {TARGET.name}: {n} requests, {len(want):,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
