"""The key-value state the contracts read and write.

Keys are ``kind/id`` strings (``account/<address>``, ``offer/<id>``, ``grant/<order>/<offer>/<machine>`` …);
values are JSON objects. A backend implements :class:`StateStore`; the contracts run against an
:class:`Overlay` so that a rejected transaction leaves nothing behind and an accepted one yields exactly the
writes to commit.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol


class StateStore(Protocol):
    def get(self, key: str) -> dict[str, Any] | None: ...

    def scan(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every (key, value) whose key starts with ``prefix``, in key order."""
        ...


class MemoryState:
    """A :class:`StateStore` in a dict: for replays and tests."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    def scan(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for key in sorted(k for k in self.data if k.startswith(prefix)):
            yield key, self.data[key]

    def commit(self, writes: dict[str, dict[str, Any]]) -> None:
        self.data.update(writes)


class Overlay:
    """Buffered writes over a base store; reads see the buffer first."""

    def __init__(self, base: StateStore) -> None:
        self.base = base
        self.writes: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self.writes:
            return self.writes[key]
        return self.base.get(key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.writes[key] = value

    def scan(self, prefix: str) -> Iterator[tuple[str, dict[str, Any]]]:
        merged = dict(self.base.scan(prefix))
        merged.update({k: v for k, v in self.writes.items() if k.startswith(prefix)})
        for key in sorted(merged):
            yield key, merged[key]
