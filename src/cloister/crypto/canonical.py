"""The one canonical JSON encoding, used for everything that is hashed or signed.

Keys sorted, no insignificant white space, UTF-8, integers only (floats have more than one spelling, so they are
refused), no NaN. Equal values always give equal bytes.
"""

from __future__ import annotations

import json
from typing import Any

from cloister.errors import MalformedInput


def _check(value: Any, path: str) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        raise MalformedInput(f"canonical JSON has no floats (at {path}); use integers in base units or strings")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedInput(f"canonical JSON object keys must be strings (at {path})")
            _check(item, f"{path}.{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
        return
    raise MalformedInput(f"{type(value).__name__} is not a JSON value (at {path})")


def canonical_json(value: Any) -> bytes:
    """Encode ``value`` canonically; raise :class:`MalformedInput` for anything with two spellings."""
    _check(value, "$")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("an object repeats a key (parsers disagree on which one wins)")
    return obj


MAX_DEPTH = 64


def _check_depth(text: str, limit: int) -> None:
    """Refuse nesting deeper than ``limit`` before parsing: the parser recurses, and deep input must not reach it."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                raise MalformedInput(f"JSON nested too deeply (more than {limit} levels)")
        elif char in "]}":
            depth -= 1


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """Parse JSON text, turning every parse failure (and any repeated object key) into :class:`MalformedInput`."""
    try:
        text = data.decode() if isinstance(data, bytes) else data
        if text.count("[") + text.count("{") > max_depth:
            _check_depth(text, max_depth)
        return json.loads(text, object_pairs_hook=_unique_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedInput(f"not valid JSON: {exc}") from None
