"""Sending Ethereum transactions: gas estimation, nonces, local signing, and waiting for the receipt.

An estimate that reverts raises :class:`~cloister.ledger.evm.rpc.Reverted` before anything is sent, so a
rejected Cloister transaction costs no gas and leaves no trace. ``clock`` (anvil only) stamps each block with
the caller's time, the way the embedded ledger's clock does; ``gas`` tops up accounts that lack ether.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from eth_account.signers.local import LocalAccount

from cloister.errors import LedgerError, ServiceUnavailable
from cloister.ledger.evm.rpc import Rpc

GAS_MARGIN = 1.25
"""Headroom over the estimate: an order's assignment can cost a little more in the block than in the estimate."""


class GasSource(Protocol):
    """Gives an address enough ether to pay for its transactions."""

    def top_up(self, rpc: Rpc, address: str) -> None: ...


class AnvilGas:
    """On anvil: set the balance directly (``anvil_setBalance``), mining nothing."""

    def __init__(self, wei: int = 10**24) -> None:
        self.wei = wei

    def top_up(self, rpc: Rpc, address: str) -> None:
        rpc.request("anvil_setBalance", [address, hex(self.wei)])


class FunderGas:
    """On any chain: send ``wei`` from a funded account to each address that runs low."""

    def __init__(self, sender: Sender, funder: LocalAccount, wei: int = 10**18) -> None:
        self.sender = sender
        self.funder = funder
        self.wei = wei

    def top_up(self, rpc: Rpc, address: str) -> None:
        self.sender.send(self.funder, address, b"", value=self.wei)


class Sender:
    """Signs and sends transactions for many accounts, one at a time per account; safe across threads."""

    def __init__(
        self,
        rpc: Rpc,
        eth_chain_id: int,
        *,
        clock: Callable[[], float] | None = None,
        gas: GasSource | None = None,
        receipt_timeout: float = 60.0,
    ) -> None:
        self.rpc = rpc
        self.eth_chain_id = eth_chain_id
        self.clock = clock
        self.gas = gas
        self.receipt_timeout = receipt_timeout
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._clock_lock = threading.Lock()
        self._funded: set[str] = set()

    def _lock(self, address: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(address, threading.Lock())

    def send(self, account: LocalAccount, to: str | None, data: bytes, *, value: int = 0) -> dict[str, Any]:
        """Estimate, sign, send and wait for the receipt of one transaction; a revert raises :class:`Reverted`."""
        address = account.address
        with self._lock(address):
            self._ensure_gas(address)
            request: dict[str, Any] = {"from": address, "data": "0x" + data.hex(), "value": hex(value)}
            if to is not None:
                request["to"] = to
            if self.clock is None:
                return self._send(account, request)
            with self._clock_lock:
                self.rpc.request("evm_setNextBlockTimestamp", [int(self.clock())])
                return self._send(account, request)

    def _ensure_gas(self, address: str) -> None:
        if self.gas is None or address in self._funded:
            return
        balance = int(self.rpc.request("eth_getBalance", [address, "latest"]), 16)
        if balance < 10**17:
            self.gas.top_up(self.rpc, address)
        self._funded.add(address)

    def _send(self, account: LocalAccount, request: dict[str, Any]) -> dict[str, Any]:
        gas = int(self.rpc.request("eth_estimateGas", [request]), 16)
        nonce = int(self.rpc.request("eth_getTransactionCount", [account.address, "pending"]), 16)
        price = int(self.rpc.request("eth_gasPrice", []), 16)
        tx = {
            "chainId": self.eth_chain_id,
            "nonce": nonce,
            "gas": int(gas * GAS_MARGIN) + 20_000,
            "gasPrice": price,
            "value": int(request["value"], 16),
            "data": request["data"],
        }
        if "to" in request:
            tx["to"] = request["to"]
        signed = account.sign_transaction(tx)
        tx_hash = self.rpc.request("eth_sendRawTransaction", ["0x" + bytes(signed.raw_transaction).hex()])
        receipt = self.wait(str(tx_hash))
        if int(receipt["status"], 16) != 1:
            self._explain(request, receipt)
        return receipt

    def wait(self, tx_hash: str) -> dict[str, Any]:
        """The receipt of a sent transaction; polls quickly first (anvil mines at once), then backs off."""
        deadline = time.monotonic() + self.receipt_timeout
        pause = 0.002
        while True:
            receipt = self.rpc.request("eth_getTransactionReceipt", [tx_hash])
            if receipt is not None:
                return dict(receipt)
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"transaction {tx_hash} was not mined within {self.receipt_timeout:.0f}s; it may still be: "
                    "re-read the account before sending it again",
                    tx_hash=tx_hash,
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _explain(self, request: dict[str, Any], receipt: dict[str, Any]) -> None:
        """A transaction that passed its estimate but reverted in its block: replay it there for the reason."""
        block = hex(int(receipt["blockNumber"], 16) - 1)
        self.rpc.request("eth_call", [request, block])  # raises Reverted with the reason, if it reverts again
        raise LedgerError(
            f"transaction {receipt['transactionHash']} reverted in block {int(receipt['blockNumber'], 16)} "
            "(out of gas, or raced by another transaction); read the state and send it again"
        )
