"""Chat-format JSONL datasets: one ``{"messages": [{"role", "content"}, ...]}`` conversation per line.

Parsed before any heavy library is imported, so a malformed dataset fails the job at once, naming file and line.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cloister.errors import JobInvalid

ROLES = ("system", "user", "assistant")
Message = dict[str, str]


def _messages(raw: Any, where: str) -> list[Message]:
    if not isinstance(raw, dict) or not isinstance(raw.get("messages"), list) or not raw["messages"]:
        raise JobInvalid(f'{where}: expected an object with a non-empty "messages" list')
    messages = []
    for index, message in enumerate(raw["messages"]):
        if (
            not isinstance(message, dict)
            or set(message) != {"role", "content"}
            or message["role"] not in ROLES
            or not isinstance(message["content"], str)
        ):
            raise JobInvalid(
                f"{where}: message {index} must be {{'role': one of {', '.join(ROLES)}, 'content': text}} "
                "and nothing else"
            )
        messages.append({"role": message["role"], "content": message["content"]})
    if not any(message["role"] == "assistant" for message in messages):
        raise JobInvalid(f"{where}: the conversation has no assistant message to learn from")
    return messages


def read_conversations(paths: Sequence[Path]) -> list[list[Message]]:
    """Every conversation of every file, in file then line order; blank lines are skipped."""
    conversations = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise JobInvalid(f"cannot read the dataset {Path(path).name}: {exc}") from None
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{Path(path).name} line {number}"
            try:
                raw = json.loads(line)
            except ValueError:
                raise JobInvalid(f"{where} is not JSON; each line must be one conversation object") from None
            conversations.append(_messages(raw, where))
    if not conversations:
        raise JobInvalid("the datasets hold no conversation; give at least one JSONL line with messages")
    return conversations
