"""Strict reading of the consensus records (commitments, receipts, API keys) from untrusted JSON and bytes.

Signed records travel as canonical JSON and are refused in any other spelling, so one record has exactly one
byte form: a flipped byte can never yield a second, still-valid encoding of the same signed value.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection
from typing import Any, NoReturn

from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import is_digest
from cloister.errors import MalformedInput

MAX_INT = (1 << 63) - 1
"""Counts and times are signed 64-bit integers, so every ledger backend can hold them."""
MAX_TEXT = 256
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_HEX_RE = re.compile(r"^(?:[0-9a-f]{2})*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def malformed(problem: str) -> NoReturn:
    raise MalformedInput(problem)


def parse_canonical(data: bytes, what: str, max_size: int) -> Any:
    """Parse ``data`` as JSON and insist it is already in canonical form (the only form that is signed)."""
    if not isinstance(data, bytes):
        malformed(f"{what} must be bytes, got {type(data).__name__}")
    if len(data) > max_size:
        malformed(f"{what} is at most {max_size} bytes; this one has {len(data)}")
    value = loads(data)
    if canonical_json(value) != data:
        malformed(f"{what} is not in canonical JSON form (sorted keys, no spaces); it was re-encoded or altered")
    return value


def json_object(data: object, what: str, names: Collection[str]) -> dict[str, Any]:
    """``data`` as an object with exactly the keys ``names``; an extra or missing key is tampering."""
    if not isinstance(data, dict):
        malformed(f"{what} must be a JSON object, got {type(data).__name__}")
    missing, unknown = sorted(set(names) - set(data)), sorted(set(data) - set(names))
    if missing or unknown:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        malformed(f"{what} has the wrong fields ({'; '.join(problems)})")
    return data


def json_list(value: object, what: str, max_items: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > max_items:
        malformed(f"{what} must be a list of at most {max_items} items")
    return value


def check_id(value: object, what: str) -> None:
    """An opaque record id (order, machine): letters, digits and ``. _ : -``."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        malformed(f"{what} must be an id (letters, digits, . _ : -), got {value!r:.80}")


def check_ids(values: object, what: str, max_items: int) -> None:
    """A tuple of distinct ids."""
    if not isinstance(values, tuple) or len(values) > max_items:
        malformed(f"{what} must be a tuple of at most {max_items} ids")
    for value in values:
        check_id(value, f"an entry of {what}")
    if len(set(values)) != len(values):
        malformed(f"{what} names the same machine twice")


def check_text(value: object, what: str, max_len: int = MAX_TEXT) -> None:
    """Non-empty printable text of bounded length."""
    if not isinstance(value, str) or not 0 < len(value) <= max_len or _CONTROL_RE.search(value):
        malformed(f"{what} must be non-empty printable text of at most {max_len} characters, got {value!r:.80}")


def check_digest(value: object, what: str) -> None:
    if not is_digest(value):
        malformed(f"{what} must be a digest (sha256: + 64 lower-case hex digits), got {value!r:.80}")


def check_count(value: object, what: str) -> None:
    """A non-negative integer: counts and Unix times in seconds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        malformed(f"{what} must be an integer from 0 to {MAX_INT}, got {value!r:.80}")


def check_flag(value: object, what: str) -> None:
    if not isinstance(value, bool):
        malformed(f"{what} must be true or false, got {value!r:.80}")


def check_bytes(value: object, what: str, min_size: int, max_size: int) -> None:
    if not isinstance(value, bytes) or not min_size <= len(value) <= max_size:
        size = f"{min_size}" if min_size == max_size else f"{min_size} to {max_size}"
        malformed(f"{what} must be {size} bytes")


def b64_encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64_decode(value: object, what: str, max_size: int) -> bytes:
    """Standard padded base64 in its one canonical spelling (unused trailing bits zero)."""
    if not isinstance(value, str) or len(value) > 4 * (max_size // 3 + 1):
        malformed(f"{what} must be base64 of at most {max_size} bytes")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        malformed(f"{what} is not valid base64")
    if b64_encode(raw) != value:
        malformed(f"{what} is not in canonical base64 form")
    return raw


def hex_decode(value: object, what: str, min_size: int, max_size: int) -> bytes:
    """Lower-case hex of ``min_size`` to ``max_size`` bytes."""
    if not isinstance(value, str) or not 2 * min_size <= len(value) <= 2 * max_size or not _HEX_RE.match(value):
        malformed(f"{what} must be {min_size} to {max_size} bytes as lower-case hex")
    return bytes.fromhex(value)
