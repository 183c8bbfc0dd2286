"""The contract's custom errors, turned into the typed errors (and messages) the embedded contracts raise.

The Solidity side reverts with compact custom errors (ids, amounts, codes); this module words them the way
:mod:`cloister.ledger.contracts` does, reading what the message needs (an offer's name, the contract's
parameters) from the chain, so a client cannot tell the backends apart by their rejections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cloister.errors import (
    CloisterError,
    InsufficientFunds,
    InvalidState,
    InvalidTransaction,
    LedgerError,
    NoEligibleMachine,
    NonceMismatch,
    NotAuthorized,
    RecordExists,
    RecordNotFound,
    RestrictionViolated,
    StaleEvidence,
    VerificationFailed,
)
from cloister.ledger.envelope import Transaction
from cloister.ledger.evm.codec import address_text, digest_text, id_text
from cloister.ledger.genesis import ContractParams
from cloister.ledger.queries import StateReader
from cloister.ledger.records import (
    CANCELLED,
    COMPLETED,
    FAILED,
    FINETUNE,
    INFERENCE,
    MACHINE_ID_PREFIX,
    MAX_AMOUNT,
    MAX_SHARE_BPS,
    OFFER_ID_PREFIX,
    OFFER_KINDS,
    OPEN_ORDER_STATES,
    ORDER_ID_PREFIX,
    ORDER_KINDS,
    ORDER_STATES,
    PENDING_GRANTS,
    READY,
    RUNNING,
    account_key,
    machine_key,
    offer_key,
    order_key,
    provider_key,
)


@dataclass(frozen=True)
class Context:
    """What wording a rejection needs: the transaction (absent for reads), parameters, and the chain's records."""

    tx: Transaction | None
    params: ContractParams
    read: StateReader


def _machine(raw: bytes) -> str:
    return id_text(MACHINE_ID_PREFIX, raw)


def _offer(raw: bytes) -> str:
    return id_text(OFFER_ID_PREFIX, raw)


def _order(raw: bytes) -> str:
    return id_text(ORDER_ID_PREFIX, raw)


def _sender(ctx: Context) -> str:
    return ctx.tx.sender if ctx.tx else "the sender"


def _nonce(ctx: Context, expected: int, got: int) -> CloisterError:
    why = "a replay of an accepted transaction" if got < expected else "a gap: an earlier nonce is missing"
    return NonceMismatch(
        f"nonce {got} is not the next one for {_sender(ctx)} (expected {expected}): {why}; "
        "re-read the account's nonce and sign again",
        expected=expected,
        got=got,
    )


def _bad_field(ctx: Context, field: str) -> CloisterError:
    what = f"{ctx.tx.type} payload" if ctx.tx else "the call"
    return InvalidTransaction(f"{what}.{field} is not valid; correct the transaction and send it again")


def _not_found(kind: str) -> Callable[[Context, bytes], CloisterError]:
    def build(ctx: Context, raw: bytes) -> CloisterError:
        if kind == "account":
            address = address_text(raw)
            return RecordNotFound(
                f"account {address} is not registered on this ledger; register it first (account.register)",
                key=account_key(address),
            )
        if kind == "provider":
            address = address_text(raw)
            return RecordNotFound(
                f"account {address} is not a provider; register as one first (provider.register)",
                key=provider_key(address),
            )
        record_id, key = {
            "machine": (_machine(raw), machine_key),
            "offer": (_offer(raw), offer_key),
            "order": (_order(raw), order_key),
        }[kind]
        return RecordNotFound(f"no {kind} {record_id} on this ledger; check the id", key=key(record_id))

    return build


_PURPOSES = ("this transfer", "this stake deposit", "this order's deposit", "this credit deposit")
_ACTIONS: dict[int, tuple[str, tuple[str, ...]]] = {
    0: ("granted or refused keys", (PENDING_GRANTS,)),
    1: ("started", (READY,)),
    2: ("completed", (RUNNING,)),
    3: ("failed", OPEN_ORDER_STATES),
    4: ("cancelled", (PENDING_GRANTS, READY)),
    5: ("checkpointed", (RUNNING,)),
    6: ("reassigned", OPEN_ORDER_STATES),
    7: ("granted or refused keys", OPEN_ORDER_STATES),
    8: ("given endpoints", (READY, RUNNING)),
    9: ("have credit withdrawn", (COMPLETED, FAILED, CANCELLED)),
    10: ("given a resume grant", (PENDING_GRANTS, READY)),
    11: ("stopped", (READY, RUNNING)),
    12: ("credited", (READY, RUNNING)),
}
_WHEN_WITHDRAWING, _WHEN_STOPPING = 9, 11
_TO_RETIRE, _TO_GRANT = 0, 1
_KIND_ACTIONS = {
    "order.start": "started",
    "order.complete": "completed",
    "order.fail": "failed by a provider",
    "order.checkpoint": "checkpointed",
    "order.resume_grant": "resumed",
    "deployment.endpoint": "served",
    "deployment.stop": "stopped",
    "credit.deposit": "credited",
    "credit.withdraw": "credited",
    "usage.settle": "billed",
    "dispute.open": "disputed",
    "replica.timeout": "given timeouts",
}
"""What each transaction that takes one kind of order does to it, as the Python contracts word it."""
_GATEWAY_ACTIONS = {
    "usage.settle": "settle its usage",
    "dispute.open": "open disputes",
    "replica.timeout": "report timeouts",
}
_OWNER_ACTIONS = (
    "order {order} belongs to {owner}; only its owner can cancel it",
    "deployment {order} belongs to {owner}; only its owner can stop it",
    "order {order} belongs to {owner}; only its owner can grant its checkpoints",
)


def _balance_too_low(ctx: Context, purpose: int, raw: bytes, needed: int, balance: int) -> CloisterError:
    address = address_text(raw)
    return InsufficientFunds(
        f"{_PURPOSES[purpose]} needs {needed} units but {address} holds {balance}; "
        f"fund the account with at least {needed - balance} more units",
        needed=needed,
        balance=balance,
    )


def _offer_owner(ctx: Context, action: int, offer: bytes, owner: bytes) -> CloisterError:
    verb = "retire it" if action == _TO_RETIRE else "grant or refuse its key"
    return NotAuthorized(f"offer {_offer(offer)} belongs to {address_text(owner)}; only its owner can {verb}")


def _not_assigned(ctx: Context, action: int, machine: bytes, order: bytes) -> CloisterError:
    advice = "; name an assignee" if action == _TO_GRANT else ""
    return NotAuthorized(f"machine {_machine(machine)} is not assigned to order {_order(order)}{advice}")


def _wrong_state(ctx: Context, order: bytes, state: int, action: int) -> CloisterError:
    verb, allowed = _ACTIONS[action]
    if action == _WHEN_STOPPING and ORDER_STATES[state] == PENDING_GRANTS:
        return InvalidState(f"deployment {_order(order)} still waits for grants; cancel it instead (order.cancel)")
    if action == _WHEN_WITHDRAWING:
        return InvalidState(
            f"deployment {_order(order)} is {ORDER_STATES[state]}; unspent credit comes back once its owner stops it"
        )
    return InvalidState(
        f"order {_order(order)} is {ORDER_STATES[state]}; it can only be {verb} when {' or '.join(allowed)}"
    )


def _engine(ctx: Context, kind: int, raw: bytes, engine: bytes) -> CloisterError:
    offer = ctx.read.offer(_offer(raw))
    return RestrictionViolated(
        f"{OFFER_KINDS[kind]} offer {offer.offer_id} ({offer.name}) lets only engines "
        f"{', '.join(offer.restrictions.engine_digests)} read it, not {digest_text(engine)}; "
        "choose one of those engines",
        offer_id=offer.offer_id,
        restriction="engine_digests",
    )


def _lease(ctx: Context, kind: int, raw: bytes, most: int, lease: int) -> CloisterError:
    offer = ctx.read.offer(_offer(raw))
    return RestrictionViolated(
        f"{OFFER_KINDS[kind]} offer {offer.offer_id} ({offer.name}) allows leases of at most "
        f"{most} hours, not {lease}; ask for a shorter lease",
        offer_id=offer.offer_id,
        restriction="max_lease_hours",
    )


def refusal_text(reason: int, offer: bytes, params: ContractParams) -> str:
    """A machine's refusal as :mod:`cloister.ledger.contracts.assignment` words it."""
    return (
        "retired",
        f"no heartbeat for over {params.heartbeat_timeout}s",
        "busy with another order",
        f"provider stake below {params.min_provider_stake}",
        f"provider stake below {max(params.min_provider_stake, params.min_serving_stake)}",
        f"platform not allowed by offer {_offer(offer)}",
        f"region not allowed by offer {_offer(offer)}",
        "not in an active compute offer that accepts the order",
    )[reason]


def _no_machine(ctx: Context, picked: int, needed: int, refusals: list[tuple[int, bytes]]) -> CloisterError:
    counted = Counter(refusal_text(reason, offer, ctx.params) for reason, offer in refusals)
    reasons = ", ".join(f"{n} {why}" for why, n in sorted(counted.items()))
    return NoEligibleMachine(
        f"the order needs {needed} machine(s) but {picked} qualify"
        + (f" (of the others: {reasons})" if reasons else " (no machines are registered)")
        + "; wait for a machine to free up or come back, or relax the order's restrictions",
        refusals=dict(counted),
    )


def _wrong_kind(ctx: Context, order: bytes, kind: int) -> CloisterError:
    actual = ORDER_KINDS[kind]
    action = _KIND_ACTIONS.get(ctx.tx.type, "used so") if ctx.tx else "used so"
    hint = "deployment.endpoint and deployment.stop" if actual == INFERENCE else "the order.* transactions"
    wanted = FINETUNE if actual == INFERENCE else INFERENCE
    return InvalidTransaction(
        f"order {_order(order)} is of kind {actual}; only {wanted} orders can be {action} (use {hint})"
    )


def _not_gateway(ctx: Context, order: bytes, gateway: bytes) -> CloisterError:
    action = _GATEWAY_ACTIONS.get(ctx.tx.type, "do this") if ctx.tx else "do this"
    return NotAuthorized(f"only deployment {_order(order)}'s gateway {address_text(gateway)} may {action}")


def _grants_missing(ctx: Context, order: bytes, machine: bytes) -> CloisterError:
    order_id, machine_id = _order(order), _machine(machine)
    granted = {g.offer_id for g in ctx.read.grants(order_id) if g.machine_id == machine_id}
    missing = [o for o in ctx.read.order(order_id).content_offers if o not in granted]
    return InvalidState(
        f"machine {machine_id} still waits for the keys of offer(s) {', '.join(missing)}; "
        "publish its endpoint once every key is granted"
    )


def _stake_serving(ctx: Context, raw: bytes, stake: int, floor: int, orders: list[bytes]) -> CloisterError:
    return InvalidState(
        f"machines of {address_text(raw)} serve deployment {', '.join(sorted(_order(o) for o in orders))}, which "
        f"needs {floor} units staked; withdraw at most {max(0, stake - floor)} until it ends"
    )


_BUILDERS: dict[str, Callable[..., CloisterError]] = {
    "SenderNotRegistered": lambda ctx, _eth: RecordNotFound(
        f"account {_sender(ctx)} is not registered on this ledger; send account.register first",
        key=account_key(_sender(ctx)),
    ),
    "NonceMismatch": _nonce,
    "BadField": _bad_field,
    "AccountNotFound": _not_found("account"),
    "ProviderNotFound": _not_found("provider"),
    "MachineNotFound": _not_found("machine"),
    "OfferNotFound": _not_found("offer"),
    "OrderNotFound": _not_found("order"),
    "AccountExists": lambda ctx, raw: RecordExists(
        f"account {address_text(raw)} is already registered; there is nothing to do"
    ),
    "EthAddressTaken": lambda ctx, eth: RecordExists(
        f"Ethereum address {eth} already acts for another account; each account needs its own key"
    ),
    "ProviderExists": lambda ctx, raw: RecordExists(
        f"account {address_text(raw)} is already a provider; register machines with it"
    ),
    "IdTaken": lambda ctx, raw: RecordExists(
        f"the id {raw.hex()} this transaction would create is taken; sign the transaction again with a new nonce"
    ),
    "GrantExists": lambda ctx, offer, machine: RecordExists(
        f"a key for offer {_offer(offer)} on machine {_machine(machine)} is already granted"
    ),
    "RefusalExists": lambda ctx, offer, machine: RecordExists(
        f"the key for offer {_offer(offer)} on machine {_machine(machine)} is already refused"
    ),
    "AlreadyGranted": lambda ctx, offer, machine: InvalidState(
        f"the key for offer {_offer(offer)} on machine {_machine(machine)} is already granted; a grant cannot be "
        "taken back, so there is nothing to refuse"
    ),
    "BalanceTooLow": _balance_too_low,
    "StakeTooLow": lambda ctx, raw, needed, stake: InsufficientFunds(
        f"cannot withdraw {needed} units: {address_text(raw)} has {stake} staked; withdraw less",
        needed=needed,
        stake=stake,
    ),
    "DepositTooLow": lambda ctx, deposit, required: InsufficientFunds(
        f"a deposit of {deposit} units does not cover this order; deposit at least {required} units",
        required=required,
    ),
    "BalanceOverflow": lambda ctx, raw, amount: InvalidState(
        f"crediting {amount} units would push {address_text(raw)} past the largest balance the ledger holds "
        f"({MAX_AMOUNT}); move funds out of that account first"
    ),
    "FaucetDisabled": lambda ctx: NotAuthorized("this chain has no faucet; ask a funded account for a transfer"),
    "FaucetLimit": lambda ctx, limit: NotAuthorized(
        f"the faucet gives at most {limit} units per drip; ask for {limit} or less"
    ),
    "NotProvider": lambda ctx, raw: NotAuthorized(
        f"account {address_text(raw)} is not a provider; send provider.register first"
    ),
    "NotMachineProvider": lambda ctx, machine, provider: NotAuthorized(
        f"machine {_machine(machine)} belongs to provider {address_text(provider)}; send this from that account"
    ),
    "NotOfferOwner": _offer_owner,
    "NotOrderOwner": lambda ctx, action, order, owner: NotAuthorized(
        _OWNER_ACTIONS[action].format(order=_order(order), owner=address_text(owner))
    ),
    "OfferNotInOrder": lambda ctx, offer, order: NotAuthorized(
        f"offer {_offer(offer)} is not part of order {_order(order)}; grant or refuse only its offers"
    ),
    "MachineNotAssigned": _not_assigned,
    "CheckpointBehind": lambda ctx, machine, step, usage: InvalidState(
        f"machine {_machine(machine)} already recorded step {step} after {usage}s of usage; "
        "a checkpoint must have a later step and no less usage"
    ),
    "MachineAlive": lambda ctx, machine, last, timeout: InvalidState(
        f"machine {_machine(machine)} sent a heartbeat at {last}; it can be reassigned only after {last + timeout} "
        "without another"
    ),
    "MachineRetired": lambda ctx, raw: InvalidState(
        f"machine {_machine(raw)} is retired; register the machine again to use it"
    ),
    "MachineWorking": lambda ctx, raw, orders: InvalidState(
        f"machine {_machine(raw)} is working on order {', '.join(sorted(_order(o) for o in orders))}; "
        "finish or fail that order before retiring the machine"
    ),
    "OfferRetired": lambda ctx, kind, raw: InvalidState(
        f"{OFFER_KINDS[kind]} offer {_offer(raw)} is retired; choose an active offer"
    ),
    "OfferAlreadyRetired": lambda ctx, raw: InvalidState(
        f"offer {_offer(raw)} is already retired; there is nothing to do"
    ),
    "WrongOfferKind": lambda ctx, raw, actual, expected: InvalidTransaction(
        f"offer {_offer(raw)} is a {OFFER_KINDS[actual]} offer, not a {OFFER_KINDS[expected]} offer; check the ids"
    ),
    "WrongOrderState": _wrong_state,
    "EngineNotAllowed": _engine,
    "LeaseTooLong": _lease,
    "NoEligibleMachine": _no_machine,
    "NoChallenge": lambda ctx, used: StaleEvidence(
        f"{_sender(ctx)} has no outstanding challenge"
        + (" (its last one was already used: a TCB answers one challenge only)" if used else "")
        + "; send machine.challenge and collect evidence for the nonce it returns",
        check="challenge",
    ),
    "ChallengeExpired": lambda ctx, age, ttl: StaleEvidence(
        f"the challenge is {age}s old, past its {ttl}s lifetime; "
        "send machine.challenge again and collect fresh evidence",
        check="challenge",
    ),
    "RegistrarSignatureInvalid": lambda ctx: VerificationFailed(
        "the machine's appraisal, endpoint or dispute is not signed by this network's attestation registrar; "
        "have the registrar check it (the ledger client needs the registrar key or service)",
        check="registrar",
    ),
    "WrongOrderKind": _wrong_kind,
    "TooManyReplicas": lambda ctx, replicas, limit: InvalidTransaction(
        f"a deployment may ask for at most {limit} replicas, not {replicas}; ask for fewer"
    ),
    "SharesTooHigh": lambda ctx, shares: InvalidTransaction(
        f"the revenue shares of this deployment's offers add up to {shares} basis points, more than "
        f"{MAX_SHARE_BPS}; leave out an offer so that the shares fit in the price"
    ),
    "GrantsMissing": _grants_missing,
    "DeploymentKeyMismatch": lambda ctx, order, machine, key: InvalidState(
        f"machine {_machine(machine)} already published deployment key {key.hex()} for order {_order(order)}; "
        "every replica serves with that one key (join the deployment vault)"
    ),
    "NotGateway": _not_gateway,
    "NoSeat": lambda ctx, machine, order: NotAuthorized(
        f"machine {_machine(machine)} was never assigned to deployment {_order(order)}; check the id"
    ),
    "DisputeExists": lambda ctx, order, request: RecordExists(
        f"request {digest_text(request)} of order {_order(order)} was already disputed; see its record"
    ),
    "TimeoutExists": lambda ctx, order, machine, request: RecordExists(
        f"machine {_machine(machine)} was already reported for request {digest_text(request)}"
    ),
    "ResumeGrantExists": lambda ctx, order, machine: RecordExists(
        f"machine {_machine(machine)} already holds a resume grant for order {_order(order)}"
    ),
    "NoReleasedCheckpoint": lambda ctx, order: InvalidState(
        f"order {_order(order)} left no checkpoint behind; there is nothing to resume from"
    ),
    "StakeServing": _stake_serving,
    "CreditTooLow": lambda ctx, order, user, needed, balance: InsufficientFunds(
        f"cannot withdraw {needed} units: {address_text(user)} has {balance} left on deployment {_order(order)}; "
        "withdraw less",
        needed=needed,
        balance=balance,
    ),
    "CreditOverflow": lambda ctx, order, user: InvalidState(
        f"the credit would exceed {MAX_AMOUNT} units; spend or withdraw some first"
    ),
}

HANDLED: frozenset[str] = frozenset(_BUILDERS)
"""The custom errors this client words; a test checks it covers every error in the contracts' ABI."""


def rejection(name: str, args: tuple[Any, ...], ctx: Context) -> CloisterError:
    """The typed error for custom error ``name`` with ``args``."""
    build = _BUILDERS.get(name)
    if build is None:
        return LedgerError(
            f"the contract rejected the call with {name}{args!r}, which this client does not know; "
            "upgrade the client to the contracts' version"
        )
    return build(ctx, *args)


def unknown_revert(message: str) -> CloisterError:
    return LedgerError(
        f"the contract reverted without a Cloister error ({message}); the contract and this client may be "
        "of different versions, or the transaction ran out of gas"
    )
