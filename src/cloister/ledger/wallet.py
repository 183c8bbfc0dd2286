"""A wallet: one identity sending typed transactions to one ledger, keeping track of its nonce.

The nonce is read from the ledger once and then counted locally, so a burst of sends costs one read. If
another process used the same account meanwhile, the ledger answers :class:`NonceMismatch`; the wallet
re-reads and retries exactly once. Any other rejection is final: retrying could only repeat it, or pay twice.
"""

from __future__ import annotations

import threading

from cloister.crypto.identity import Identity
from cloister.errors import NonceMismatch, RecordNotFound
from cloister.ledger.envelope import SignedTransaction, Transaction
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.transactions import FaucetDrip, Payload, RegisterAccount, Transfer


class Wallet:
    """Signs and submits payloads for ``identity``; safe to share between threads."""

    def __init__(self, identity: Identity, ledger: Ledger) -> None:
        self._identity = identity
        self._ledger = ledger
        self._lock = threading.Lock()
        self._last_nonce: int | None = None

    @property
    def address(self) -> str:
        return self._identity.address

    def send(self, payload: Payload) -> TxReceipt:
        """Sign ``payload`` with the next nonce and submit it; a refusal raises the ledger's typed error."""
        with self._lock:
            try:
                return self._submit(payload)
            except NonceMismatch:
                self._last_nonce = None
                return self._submit(payload)

    def _submit(self, payload: Payload) -> TxReceipt:
        if self._last_nonce is None:
            self._last_nonce = self._ledger_nonce()
        nonce = self._last_nonce + 1
        tx = Transaction(payload.TYPE, payload.to_payload(), self.address, nonce, self._ledger.chain_id)
        receipt = self._ledger.submit(SignedTransaction.sign(self._identity, tx))
        self._last_nonce = nonce
        return receipt

    def _ledger_nonce(self) -> int:
        try:
            return self._ledger.account(self.address).nonce
        except RecordNotFound:
            return 0

    def register(self, name: str) -> TxReceipt:
        """Register this identity's account (its sealing key included) under a display name."""
        return self.send(RegisterAccount(name, self._identity.public.sealing_key))

    def faucet(self, amount: int) -> TxReceipt:
        return self.send(FaucetDrip(amount))

    def transfer(self, to: str, amount: int) -> TxReceipt:
        return self.send(Transfer(to, amount))
