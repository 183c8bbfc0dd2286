"""Metering: a request runs only if the caller's credit still covers its worst case.

Available credit = the ledger's credit record, minus usage this gateway billed but has not settled, minus the
worst case of the caller's requests still running. A request reserves its worst case while it runs and releases
it once its real usage is recorded, so concurrent requests cannot together spend more than the credit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cloister.errors import CreditExhausted
from cloister.gateway.store import GatewayStore
from cloister.ledger.amounts import format_amount

CREDIT_TTL = 2.0
"""Seconds a credit read is trusted; a refusal is always re-checked against a fresh read first."""


def charge(tokens: int, price_per_1k_tokens: int) -> int:
    """Units the contract charges for ``tokens`` (``usage.settle`` rounds down the same way)."""
    return tokens * price_per_1k_tokens // 1000


@dataclass(frozen=True)
class Hold:
    """Credit held for one running request."""

    order_id: str
    user: str
    tokens: int


class Meter:
    """Credit checks for one gateway; ``credit(order_id, user)`` reads the ledger's balance in units."""

    def __init__(
        self,
        store: GatewayStore,
        credit: Callable[[str, str], int],
        *,
        ttl: float = CREDIT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._credit = credit
        self._ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._reserved: dict[tuple[str, str], int] = {}
        self._cache: dict[tuple[str, str], tuple[float, int]] = {}

    def _balance(self, key: tuple[str, str], fresh: bool) -> int:
        cached = self._cache.get(key)
        if not fresh and cached is not None and self._clock() - cached[0] < self._ttl:
            return cached[1]
        balance = self._credit(*key)
        self._cache[key] = (self._clock(), balance)
        return balance

    def _available(self, key: tuple[str, str], price: int, fresh: bool) -> int:
        owed = charge(self._store.unsettled_tokens(*key) + self._reserved.get(key, 0), price)
        return self._balance(key, fresh) - owed

    def hold(self, order_id: str, user: str, worst_tokens: int, price_per_1k_tokens: int) -> Hold:
        """Hold ``worst_tokens`` of ``user``'s credit until :meth:`release`, or raise :class:`CreditExhausted`.

        It may read the ledger: call it from a worker thread.
        """
        key = (order_id, user)
        need = charge(worst_tokens, price_per_1k_tokens)
        with self._lock:
            available = self._available(key, price_per_1k_tokens, fresh=False)
            if available < need:
                available = self._available(key, price_per_1k_tokens, fresh=True)
            if available < need:
                raise CreditExhausted(
                    f"your credit for deployment {order_id} ({format_amount(max(available, 0))} tokens left after "
                    f"usage not yet settled) cannot cover this request's worst case ({format_amount(need)}); "
                    "deposit more credit for it (a credit.deposit transaction), or lower max_tokens",
                    order_id=order_id,
                )
            self._reserved[key] = self._reserved.get(key, 0) + worst_tokens
        return Hold(order_id, user, worst_tokens)

    def release(self, hold: Hold) -> None:
        """Give the held worst case back (the request's real usage is in the store by now, or it failed)."""
        key = (hold.order_id, hold.user)
        with self._lock:
            left = self._reserved[key] - hold.tokens
            if left:
                self._reserved[key] = left
            else:
                del self._reserved[key]
