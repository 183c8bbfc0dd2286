"""A small ABI codec over ``eth_abi`` for the compiled contracts: calls, outputs, custom errors and events.

Built from the artifact's ABI entries, so the Python side and the Solidity side cannot drift apart silently: a
function, error or event the contracts do not declare is a ``KeyError`` at start-up, not a wrong guess later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_utils.crypto import keccak


def abi_type(param: dict[str, Any]) -> str:
    """The canonical type of an ABI parameter: tuples spelled out as ``(t1,t2,…)`` with their array suffix."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(abi_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def _signature(entry: dict[str, Any]) -> str:
    return f"{entry['name']}({','.join(abi_type(p) for p in entry['inputs'])})"


@dataclass(frozen=True)
class Function:
    name: str
    selector: bytes
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class CustomError:
    name: str
    inputs: list[str]


@dataclass(frozen=True)
class Event:
    name: str
    indexed: list[tuple[int, str]]
    data: list[tuple[int, str]]

    def decode(self, topics: Sequence[bytes], data: bytes) -> list[Any]:
        """The event's arguments in declaration order (indexed ones from the topics)."""
        values: list[Any] = [None] * (len(self.indexed) + len(self.data))
        for (position, kind), topic in zip(self.indexed, topics[1:], strict=True):
            values[position] = abi_decode([kind], topic)[0]
        for (position, _), value in zip(self.data, abi_decode([k for _, k in self.data], data), strict=True):
            values[position] = value
        return values


class Abi:
    """Functions by name, custom errors by selector and events by topic, from one or more ABIs."""

    def __init__(self, abis: Iterable[list[dict[str, Any]]]) -> None:
        self.functions: dict[str, Function] = {}
        self.errors: dict[bytes, CustomError] = {}
        self.events: dict[bytes, Event] = {}
        for abi in abis:
            for entry in abi:
                self._add(entry)

    def _add(self, entry: dict[str, Any]) -> None:
        kind = entry["type"]
        if kind == "function":
            signature = _signature(entry)
            self.functions[entry["name"]] = Function(
                entry["name"],
                keccak(text=signature)[:4],
                [abi_type(p) for p in entry["inputs"]],
                [abi_type(p) for p in entry["outputs"]],
            )
        elif kind == "error":
            self.errors[keccak(text=_signature(entry))[:4]] = CustomError(
                entry["name"], [abi_type(p) for p in entry["inputs"]]
            )
        elif kind == "event":
            params = list(enumerate(entry["inputs"]))
            self.events[keccak(text=_signature(entry))] = Event(
                entry["name"],
                [(i, abi_type(p)) for i, p in params if p["indexed"]],
                [(i, abi_type(p)) for i, p in params if not p["indexed"]],
            )

    def encode_call(self, name: str, args: Sequence[Any]) -> bytes:
        function = self.functions[name]
        return function.selector + abi_encode(function.inputs, list(args))

    def decode_output(self, name: str, data: bytes) -> tuple[Any, ...]:
        return tuple(abi_decode(self.functions[name].outputs, data))

    def decode_error(self, data: bytes) -> tuple[str, tuple[Any, ...]] | None:
        """``(name, args)`` of a custom error's revert data, or ``None`` if it is not one of ours."""
        error = self.errors.get(data[:4])
        if error is None:
            return None
        return error.name, tuple(abi_decode(error.inputs, data[4:]))
