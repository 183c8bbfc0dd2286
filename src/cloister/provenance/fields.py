"""Strict JSON reading and the small value types that order reports and manifests share.

Builders and parsers go through the same ``__post_init__`` checks, so the loader cannot sign what a verifier
would refuse, and a verifier never hands on a value the loader could not have built.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, NoReturn, Self, cast

from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.digest import is_digest
from cloister.errors import BindingMismatch, DigestMismatch, MalformedInput

MAX_INT = (1 << 63) - 1
"""Every count, size and time is a signed 64-bit integer, so any ledger backend can hold it."""
MAX_NAME = 256
MAX_TEXT = 4096
MAX_URI = 2048
MAX_ITEMS = 64
MAX_PARAMS = 64 * 1024
MAX_DEPTH = 32

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_DECIMAL_RE = re.compile(r"^-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,30})?$")
_HEX_RE = re.compile(r"^[0-9a-f]*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def malformed(problem: str) -> NoReturn:
    raise MalformedInput(problem)


def parse_json(data: bytes | str, what: str, max_size: int) -> Any:
    """Parse untrusted JSON text of bounded size and nesting (repeated keys are refused by ``loads``)."""
    if len(data) > max_size:
        malformed(f"{what} is at most {max_size} bytes; this one has {len(data)}")
    try:
        value = loads(data)
    except RecursionError:
        malformed(f"{what} is nested too deeply")
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_DEPTH:
            malformed(f"{what} is nested more than {MAX_DEPTH} levels deep")
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        pending.extend((child, depth + 1) for child in children)
    return value


def json_object(data: object, what: str, names: Collection[str]) -> dict[str, Any]:
    """``data`` as an object with exactly the keys ``names``; extra or missing keys are tampering."""
    if not isinstance(data, dict):
        malformed(f"{what} must be a JSON object, got {type(data).__name__}")
    missing, unknown = sorted(set(names) - set(data)), sorted(set(data) - set(names))
    if missing or unknown:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unknown {', '.join(unknown)}"] if unknown else []
        )
        malformed(f"{what} has the wrong fields ({'; '.join(problems)})")
    return data


def json_list(value: object, what: str, max_items: int = MAX_ITEMS) -> list[Any]:
    if not isinstance(value, list) or len(value) > max_items:
        malformed(f"{what} must be a list of at most {max_items} items")
    return value


def check_text(value: object, what: str, max_len: int = MAX_NAME) -> None:
    """A non-empty, printable string of bounded length."""
    if not isinstance(value, str) or not 0 < len(value) <= max_len or _CONTROL_RE.search(value):
        malformed(f"{what} must be non-empty printable text of at most {max_len} characters, got {value!r:.80}")


def check_id(value: object, what: str) -> None:
    """An opaque record id (order, offer, machine): letters, digits and ``. _ : -``."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        malformed(f"{what} must be an id (letters, digits, . _ : -), got {value!r:.80}")


def check_digest(value: object, what: str) -> None:
    if not is_digest(value):
        malformed(f"{what} must be a digest (sha256: + 64 lower-case hex digits), got {value!r:.80}")


def check_count(value: object, what: str) -> None:
    """A non-negative integer: counts, sizes, Unix times in seconds."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        malformed(f"{what} must be an integer from 0 to {MAX_INT}, got {value!r:.80}")


def check_items(values: object, what: str, kind: type, *, min_items: int = 0, max_items: int = MAX_ITEMS) -> None:
    if not isinstance(values, tuple) or not min_items <= len(values) <= max_items:
        malformed(f"{what} must hold {min_items} to {max_items} items")
    if not all(isinstance(item, kind) for item in values):
        malformed(f"{what} must hold only {kind.__name__} items")


def check_params(value: object, what: str) -> None:
    """A JSON object of canonical values (no floats: write ``"2e-4"`` as a string), of bounded size."""
    if not isinstance(value, dict):
        malformed(f"{what} must be a JSON object")
    if len(canonical_json(value)) > MAX_PARAMS:
        malformed(f"{what} is larger than {MAX_PARAMS} bytes")


def check_decimal(value: object, what: str) -> None:
    if not isinstance(value, Decimal) or not value.is_finite():
        malformed(f"{what} must be a finite Decimal (build it from a string, not a float)")


def decimal_to_json(value: Decimal) -> str:
    """Decimals travel as plain decimal strings: canonical JSON has no floats."""
    return format(value, "f")


def decimal_from_json(value: object, what: str) -> Decimal:
    if not isinstance(value, str) or not _DECIMAL_RE.match(value):
        malformed(f'{what} must be a decimal number written as a string, like "0.25", got {value!r:.80}')
    return Decimal(value)


def hex_from_json(value: object, what: str, size: int) -> bytes:
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX_RE.match(value):
        malformed(f"{what} must be {size} bytes as lower-case hex")
    return bytes.fromhex(value)


def check_key(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        malformed(f"{what} must be a 32-byte Ed25519 public key")


def check_binding(actual: str, expected: str | None, what: str) -> None:
    """Refuse a correctly signed statement about another order or result than the caller asked about."""
    if expected is not None and actual != expected:
        raise BindingMismatch(
            f"this statement is for {what} {actual}, not {expected}: it may be replayed from another job; "
            f"fetch the one published for {expected}"
        )


def check_ledger_digest(actual: str, expected: str, what: str) -> None:
    """Refuse a statement whose digest is not the one the ledger records for the job."""
    if actual != expected:
        raise DigestMismatch(
            f"the {what} hashes to {actual} but the ledger records {expected}: it is not the {what} the loader "
            "published; fetch it again from its publisher"
        )


class FlatRecord:
    """Base of frozen dataclasses whose fields are JSON strings and integers, checked by ``__post_init__``."""

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: object, what: str) -> Self:
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        return cast(Any, cls)(**json_object(data, what, names))  # type: ignore[no-any-return]

    @classmethod
    def list_from_json(cls, value: object, what: str, max_items: int = MAX_ITEMS) -> tuple[Self, ...]:
        return tuple(cls.from_json(item, f"{what}[{i}]") for i, item in enumerate(json_list(value, what, max_items)))


@dataclass(frozen=True)
class ContentRef(FlatRecord):
    """One piece of content a job read: the ledger offer that published it and its plaintext digest."""

    offer_id: str
    digest: str

    def __post_init__(self) -> None:
        check_id(self.offer_id, "offer id")
        check_digest(self.digest, f"digest of offer {self.offer_id}")


def check_refs(refs: tuple[ContentRef, ...], what: str) -> None:
    """One to :data:`MAX_ITEMS` content references naming distinct offers."""
    check_items(refs, what, ContentRef, min_items=1)
    if len({ref.offer_id for ref in refs}) != len(refs):
        malformed(f"{what} name the same offer twice")
