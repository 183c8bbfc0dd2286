"""The checklist every verifier and validator fills in as it goes, for people (`cloister verify`) and audits.

A verifier records each check it passes; when one fails it records the failure and raises the typed error, so the
caller can print everything that was proven before the failure, and the failed check by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from cloister.errors import AttestationError, CloisterError


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


@dataclass
class Checklist:
    items: list[Check] = field(default_factory=list)

    def passed(self, name: str, detail: str = "") -> None:
        self.items.append(Check(name, True, detail))

    def fail(self, error: AttestationError) -> NoReturn:
        """Record ``error`` as the failed check and raise it."""
        self.items.append(Check(error.check, False, error.message))
        raise error

    def run(self, name: str, detail: str = "") -> _Step:
        """``with checklist.run("chain"):`` records a pass, or records and re-raises a Cloister error.

        An error that does not yet name its check (a ``check`` detail) is named after the step, so whoever
        catches it learns which check failed.
        """
        return _Step(self, name, detail)

    @property
    def ok(self) -> bool:
        return all(item.passed for item in self.items)

    def to_json(self) -> list[dict[str, Any]]:
        return [item.to_json() for item in self.items]


class _Step:
    def __init__(self, checklist: Checklist, name: str, detail: str) -> None:
        self.checklist, self.name, self.detail = checklist, name, detail

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if exc is None:
            self.checklist.passed(self.name, self.detail)
        elif isinstance(exc, CloisterError):
            name = str(exc.details.get("check") or self.name)
            exc.details["check"] = name
            self.checklist.items.append(Check(name, False, exc.message))
        return False


def resolve_now(now: datetime | None) -> datetime:
    """The injectable clock of every verifier: ``now`` if given (timezone-aware), else the current UTC time."""
    if now is None:
        return datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("verification times must be timezone-aware")
    return now
