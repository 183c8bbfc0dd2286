"""API key checks: the key must name this gateway and be signed by its account's key on the ledger.

Keys need no database here: a verified key is remembered (bounded, by its exact text), so the ledger is read once
per key, not once per request.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from cloister.consensus.apikeys import parse_api_key
from cloister.consensus.modes import ConsensusMode, parse_mode
from cloister.errors import ApiKeyRejected, RecordNotFound
from cloister.ledger.records import Account

CACHE_SIZE = 4096
_HOW = "send 'Authorization: Bearer clk_…' (make one with `cloister gateway key create --gateway ADDRESS`)"


@dataclass(frozen=True)
class Caller:
    """Who is asking, and the consensus mode their key chose (``None``: the deployment's default)."""

    account: str
    consensus: ConsensusMode | None


class KeyChecker:
    """Checks ``Authorization`` headers for the gateway at ``address``; ``accounts`` reads the ledger."""

    def __init__(self, address: str, accounts: Callable[[str], Account], *, cache_size: int = CACHE_SIZE) -> None:
        self.address = address
        self._accounts = accounts
        self._cache_size = cache_size
        self._known: OrderedDict[str, Caller] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, authorization: str | None) -> Caller:
        """The caller, or :class:`ApiKeyRejected` (HTTP 401) saying what is wrong with the key."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiKeyRejected(f"no API key; {_HOW}")
        text = token.strip()
        with self._lock:
            known = self._known.get(text)
            if known is not None:
                self._known.move_to_end(text)
                return known
        caller = self._verify(text)
        with self._lock:
            self._known[text] = caller
            while len(self._known) > self._cache_size:
                self._known.popitem(last=False)
        return caller

    def _verify(self, text: str) -> Caller:
        key = parse_api_key(text)
        if key.gateway != self.address:
            raise ApiKeyRejected(f"this API key is for gateway {key.gateway}, not this one ({self.address}); {_HOW}")
        try:
            account = self._accounts(key.account)
        except RecordNotFound:
            raise ApiKeyRejected(f"account {key.account} is not registered on the ledger; {_HOW}") from None
        key.verify(account.signing_key)
        return Caller(key.account, None if key.consensus is None else parse_mode(key.consensus))
