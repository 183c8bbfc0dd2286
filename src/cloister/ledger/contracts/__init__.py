"""The contracts: a pure, deterministic state machine from (state, signed transaction, block) to an outcome.

:func:`execute` checks the envelope (signature, chain, sender, nonce), parses the payload into its typed form,
runs the handler of that type over buffered state, and returns the writes and events; a rejection raises a
typed error and leaves nothing behind. Every backend calls this one function, so they all agree.
"""

from __future__ import annotations

import dataclasses

from cloister.errors import NonceMismatch, RecordNotFound, WrongChain
from cloister.ledger.contracts import accounts, deployments, disputes, failover, machines, offers, orders
from cloister.ledger.contracts.call import BlockContext, Call, Handler, Outcome
from cloister.ledger.envelope import SignedTransaction
from cloister.ledger.genesis import Genesis
from cloister.ledger.records import Account, account_key
from cloister.ledger.state import StateStore
from cloister.ledger.transactions import Payload, RegisterAccount, parse_payload

__all__ = ["HANDLERS", "BlockContext", "Outcome", "execute"]

HANDLERS: dict[type[Payload], Handler] = {
    **accounts.HANDLERS,
    **machines.HANDLERS,
    **offers.HANDLERS,
    **orders.HANDLERS,
    **failover.HANDLERS,
    **deployments.HANDLERS,
    **disputes.HANDLERS,
}


def execute(store: StateStore, signed: SignedTransaction, ctx: BlockContext, genesis: Genesis) -> Outcome:
    """Apply one signed transaction to ``store`` (read only) and return what to commit, or raise why not."""
    signed.verify()
    tx = signed.tx
    if tx.chain_id != genesis.chain_id:
        raise WrongChain(
            f"the transaction is for chain {tx.chain_id!r} but this ledger is {genesis.chain_id!r}; "
            "point the client at the ledger it was meant for"
        )
    stored = store.get(account_key(tx.sender))
    if stored is None and tx.type != RegisterAccount.TYPE:
        raise RecordNotFound(
            f"account {tx.sender} is not registered on this ledger; send account.register first",
            key=account_key(tx.sender),
        )
    expected = Account.from_json(stored).nonce + 1 if stored is not None else 1
    if tx.nonce != expected:
        why = "a replay of an accepted transaction" if tx.nonce < expected else "a gap: an earlier nonce is missing"
        raise NonceMismatch(
            f"nonce {tx.nonce} is not the next one for {tx.sender} (expected {expected}): {why}; "
            "re-read the account's nonce and sign again",
            expected=expected,
            got=tx.nonce,
        )
    payload = parse_payload(tx.type, tx.payload)
    call = Call(store, signed, ctx, genesis.params)
    HANDLERS[type(payload)](call, payload)
    account = call.read.account(tx.sender)
    call.put(dataclasses.replace(account, nonce=account.nonce + 1))
    return call.outcome()
