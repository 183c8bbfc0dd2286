"""The contract's logs as Cloister's event stream, and an index of it that survives re-orgs and restarts.

Every protocol event carries ``seq``, its position in the one stream, counted on chain. The index fetches logs
block range by block range and insists each event is the next ``seq``, so nothing is missed or repeated. On
every refresh it checks that the newest indexed block is still on the chain; if not (a re-org, or a devnet
reverted to a snapshot) it walks back to the newest event whose block survived and re-reads from there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from cloister.errors import BadRequest, LedgerError
from cloister.ledger.evm.abi import Abi
from cloister.ledger.evm.codec import address_text, digest_text, id_text, optional_digest, optional_text
from cloister.ledger.evm.rpc import Rpc
from cloister.ledger.protocol import EventPage, LedgerEvent
from cloister.ledger.records import (
    DISPUTE_ID_PREFIX,
    MACHINE_ID_PREFIX,
    OFFER_ID_PREFIX,
    OFFER_KINDS,
    ORDER_ID_PREFIX,
    VERDICTS,
)

MAX_PAGE = 1000
"""Most events one call returns, as on the embedded ledger."""
LOG_RANGE = 2000
"""Most blocks one ``eth_getLogs`` covers; nodes refuse wide ranges."""


def _machine(raw: bytes) -> str:
    return id_text(MACHINE_ID_PREFIX, raw)


def _offer(raw: bytes) -> str:
    return id_text(OFFER_ID_PREFIX, raw)


def _order(raw: bytes) -> str:
    return id_text(ORDER_ID_PREFIX, raw)


def _dispute(raw: bytes) -> str:
    return id_text(DISPUTE_ID_PREFIX, raw)


def _slashed(machine: bytes, provider: bytes, amount: int, dispute: bytes, request: bytes) -> dict[str, Any]:
    """A zero dispute id marks a slash for a timeout (on the request digest)."""
    reason = f"dispute {_dispute(dispute)}" if dispute != bytes(8) else f"timeout on {digest_text(request)}"
    return {"machine_id": _machine(machine), "provider": address_text(provider), "amount": amount, "reason": reason}


EVENTS: dict[str, tuple[str, Callable[..., dict[str, Any]]]] = {
    # Solidity event → (kind, attrs from the arguments after seq), worded as cloister.ledger.contracts emits them.
    "AccountRegistered": ("account.registered", lambda a, name: {"address": address_text(a), "name": name}),
    "FaucetDripped": ("faucet.drip", lambda to, amount: {"to": address_text(to), "amount": amount}),
    "Transferred": (
        "transfer",
        lambda sender, to, amount: {"sender": address_text(sender), "to": address_text(to), "amount": amount},
    ),
    "ProviderRegistered": ("provider.registered", lambda a, name: {"address": address_text(a), "name": name}),
    "StakeDeposited": (
        "stake.deposited",
        lambda a, amount, stake: {"address": address_text(a), "amount": amount, "stake": stake},
    ),
    "StakeWithdrawn": (
        "stake.withdrawn",
        lambda a, amount, stake: {"address": address_text(a), "amount": amount, "stake": stake},
    ),
    "MachineChallenged": (
        "machine.challenged",
        lambda provider, nonce, expires: {
            "provider": address_text(provider),
            "nonce": nonce.hex(),
            "expires_at": expires,
        },
    ),
    "MachineRegistered": (
        "machine.registered",
        lambda m, provider, platform, region, attestation, verdict: {
            "machine_id": _machine(m),
            "provider": address_text(provider),
            "platform": platform,
            "region": region,
            "attestation": digest_text(attestation),
            "verdict": VERDICTS[verdict],
        },
    ),
    "MachineRetiredEvent": (
        "machine.retired",
        lambda m, provider: {"machine_id": _machine(m), "provider": address_text(provider)},
    ),
    "OfferCreated": (
        "offer.created",
        lambda o, owner, kind, digest: {
            "offer_id": _offer(o),
            "owner": address_text(owner),
            "kind": OFFER_KINDS[kind],
            "content_digest": None if OFFER_KINDS[kind] == "compute" else digest_text(digest),
        },
    ),
    "OfferRetiredEvent": ("offer.retired", lambda o, owner: {"offer_id": _offer(o), "owner": address_text(owner)}),
    "OrderCreated": (
        "order.created",
        lambda o, owner, deposit, required: {
            "order_id": _order(o),
            "owner": address_text(owner),
            "deposit": deposit,
            "required": required,
        },
    ),
    "OrderAssigned": (
        "order.assigned",
        lambda o, machines, compute: {
            "order_id": _order(o),
            "machines": [_machine(m) for m in machines],
            "compute_offer": _offer(compute),
        },
    ),
    "GrantPosted": (
        "grant.posted",
        lambda o, offer, m: {"order_id": _order(o), "offer_id": _offer(offer), "machine_id": _machine(m)},
    ),
    "GrantRefused": (
        "grant.refused",
        lambda o, offer, m, reason: {
            "order_id": _order(o),
            "offer_id": _offer(offer),
            "machine_id": _machine(m),
            "reason": reason,
        },
    ),
    "OrderReady": (
        "order.ready",
        lambda o, machines: {"order_id": _order(o), "machines": [_machine(m) for m in machines]},
    ),
    "OrderStarted": ("order.started", lambda o, m: {"order_id": _order(o), "machine_id": _machine(m)}),
    "Payment": (
        "payment",
        lambda o, to, amount, kind, offer: {
            "order_id": _order(o),
            "to": address_text(to),
            "amount": amount,
            "reason": f"{OFFER_KINDS[kind]} offer {_offer(offer)}",
        },
    ),
    "Refund": ("refund", lambda o, to, amount: {"order_id": _order(o), "to": address_text(to), "amount": amount}),
    "OrderCompleted": (
        "order.completed",
        lambda o, usage, report, manifest, delivery: {
            "order_id": _order(o),
            "usage_seconds": usage,
            "report_digest": digest_text(report),
            "manifest_digest": optional_digest(manifest),
            "delivery_uri": delivery,
        },
    ),
    "OrderFailed": (
        "order.failed",
        lambda o, m, reason, delivery: {
            "order_id": _order(o),
            "machine_id": _machine(m),
            "reason": reason,
            "delivery_uri": optional_text(delivery),
        },
    ),
    "OrderCancelled": ("order.cancelled", lambda o: {"order_id": _order(o)}),
    "OrderCheckpointed": (
        "order.checkpointed",
        lambda o, m, step, usage, digest, notice: {
            "order_id": _order(o),
            "machine_id": _machine(m),
            "step": step,
            "usage_seconds": usage,
            "checkpoint_digest": digest_text(digest),
            "notice_uri": notice,
        },
    ),
    "OrderReassigned": (
        "order.reassigned",
        lambda o, dead, new: {
            "order_id": _order(o),
            "from": _machine(dead),
            "to": _machine(new) if new != bytes(8) else None,
        },
    ),
    "ResumeGranted": (
        "order.resume_granted",
        lambda o, m, digest: {
            "order_id": _order(o),
            "machine_id": _machine(m),
            "checkpoint_digest": digest_text(digest),
        },
    ),
    "EndpointRegistered": (
        "deployment.endpoint",
        lambda o, m, url, key: {
            "order_id": _order(o),
            "machine_id": _machine(m),
            "url": url,
            "deployment_key": key.hex(),
        },
    ),
    "DeploymentStopped": ("deployment.stopped", lambda o, seconds: {"order_id": _order(o), "serving_seconds": seconds}),
    "CreditDeposited": (
        "credit.deposited",
        lambda o, user, amount, balance: {
            "order_id": _order(o),
            "user": address_text(user),
            "amount": amount,
            "balance": balance,
        },
    ),
    "CreditWithdrawn": (
        "credit.withdrawn",
        lambda o, user, amount, balance: {
            "order_id": _order(o),
            "user": address_text(user),
            "amount": amount,
            "balance": balance,
        },
    ),
    "UsageSettled": (
        "usage.settled",
        lambda o, user, tokens, charge, capped, receipts: {
            "order_id": _order(o),
            "user": address_text(user),
            "tokens": tokens,
            "charge": charge,
            "capped": capped,
            "receipts_digest": digest_text(receipts),
        },
    ),
    "RevenueShared": (
        "payment",
        lambda o, to, amount, offer: {
            "order_id": _order(o),
            "to": address_text(to),
            "amount": amount,
            "reason": f"revenue share of offer {_offer(offer)}",
        },
    ),
    "UsagePaid": (
        "payment",
        lambda o, to, amount: {
            "order_id": _order(o),
            "to": address_text(to),
            "amount": amount,
            "reason": f"usage of deployment {_order(o)}",
        },
    ),
    "DisputeOpened": (
        "dispute.opened",
        lambda d, o, request, output, slashed, rewarded, amount, burned: {
            "dispute_id": _dispute(d),
            "order_id": _order(o),
            "request_digest": digest_text(request),
            "output_digest": optional_digest(output),
            "slashed": [_machine(m) for m in slashed],
            "rewarded": [_machine(m) for m in rewarded],
            "slashed_amount": amount,
            "burned": burned,
        },
    ),
    "DisputeRewarded": (
        "payment",
        lambda o, to, amount, d, m: {
            "order_id": _order(o),
            "to": address_text(to),
            "amount": amount,
            "reason": f"dispute reward {_dispute(d)} for {_machine(m)}",
        },
    ),
    "StakeSlashed": ("stake.slashed", _slashed),
    "ReplicaTimedOut": (
        "replica.timeout",
        lambda o, m, request, amount: {
            "order_id": _order(o),
            "machine_id": _machine(m),
            "request_digest": digest_text(request),
            "amount": amount,
        },
    ),
}


class EventDecoder:
    """Turns the contract's logs into :class:`LedgerEvent`; logs of other contracts or kinds are skipped."""

    def __init__(self, abi: Abi, contract: str) -> None:
        self.contract = contract.lower()
        self.abi = abi
        missing = set(EVENTS) - {event.name for event in abi.events.values()}
        if missing:
            raise LedgerError(f"the contract ABI lacks events {sorted(missing)}; recompile the contracts")

    def decode(self, log: dict[str, Any]) -> LedgerEvent | None:
        if str(log["address"]).lower() != self.contract or not log["topics"]:
            return None
        topics = [bytes.fromhex(t[2:]) for t in log["topics"]]
        event = self.abi.events.get(topics[0])
        if event is None or event.name not in EVENTS:
            return None
        seq, *args = event.decode(topics, bytes.fromhex(log["data"][2:]))
        kind, attrs = EVENTS[event.name]
        return LedgerEvent(int(seq), int(log["blockNumber"], 16), kind, attrs(*args))


class EventIndex:
    """The ledger's events in ``seq`` order, read from the chain on demand; safe to share between threads."""

    def __init__(self, rpc: Rpc, decoder: EventDecoder, start_block: int, *, confirmations: int = 0) -> None:
        self._rpc = rpc
        self._decoder = decoder
        self._start = start_block
        self._confirmations = confirmations
        self._lock = threading.Lock()
        self._events: list[LedgerEvent] = []
        self._hashes: list[str] = []  # block hash of each event, to notice re-orgs
        self._next_block = start_block
        self._tip: tuple[int, str] | None = None  # the newest block read, and its hash

    def page(self, after: int, limit: int) -> EventPage:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise BadRequest(f"the cursor must be a non-negative integer, got {after!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
        with self._lock:
            self._refresh()
            events = self._events[after : after + limit]
        return EventPage(events, events[-1].seq if events else after)

    def _block_hash(self, number: int) -> str | None:
        block = self._rpc.request("eth_getBlockByNumber", [hex(number), False])
        return None if block is None else str(block["hash"])

    def _refresh(self) -> None:
        latest = int(self._rpc.request("eth_blockNumber", []), 16) - self._confirmations
        if self._tip is not None and self._block_hash(self._tip[0]) != self._tip[1]:
            self._rewind()
        while self._next_block <= latest:
            last = min(latest, self._next_block + LOG_RANGE - 1)
            tip_hash = self._block_hash(last)
            logs = self._rpc.request(
                "eth_getLogs",
                [{"address": self._decoder.contract, "fromBlock": hex(self._next_block), "toBlock": hex(last)}],
            )
            for log in sorted(logs, key=lambda x: (int(x["blockNumber"], 16), int(x["logIndex"], 16))):
                self._append(log)
            self._next_block = last + 1
            if tip_hash is not None:
                self._tip = (last, tip_hash)

    def _append(self, log: dict[str, Any]) -> None:
        if log.get("removed"):
            return
        event = self._decoder.decode(log)
        if event is None:
            return
        if event.seq != len(self._events) + 1:
            raise LedgerError(
                f"the chain's event {event.seq} follows event {len(self._events)}: the node's log is incomplete "
                "or re-organised mid-read; read the events again"
            )
        self._events.append(event)
        self._hashes.append(str(log["blockHash"]))

    def _rewind(self) -> None:
        """Drop events whose blocks left the chain; keep those of the newest surviving block, re-read the rest."""
        while self._events and self._block_hash(self._events[-1].height) != self._hashes[-1]:
            height = self._events[-1].height
            while self._events and self._events[-1].height == height:
                self._events.pop()
                self._hashes.pop()
        self._next_block = self._events[-1].height + 1 if self._events else self._start
        self._tip = None
