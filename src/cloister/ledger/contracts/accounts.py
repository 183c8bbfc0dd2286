"""Accounts, the devnet faucet, transfers, provider registration and stake."""

from __future__ import annotations

import dataclasses

from cloister.errors import InsufficientFunds, InvalidState, NotAuthorized, RecordExists
from cloister.ledger.contracts.call import Call, Handler
from cloister.ledger.records import INFERENCE, OPEN_ORDER_STATES, Account, Provider, account_key, provider_key
from cloister.ledger.transactions import (
    DepositStake,
    FaucetDrip,
    Payload,
    RegisterAccount,
    RegisterProvider,
    Transfer,
    WithdrawStake,
)


def register_account(call: Call, p: RegisterAccount) -> None:
    if call.exists(account_key(call.sender)):
        raise RecordExists(f"account {call.sender} is already registered; there is nothing to do")
    call.put(Account(call.sender, p.name, call.signing_key, p.sealing_key, balance=0, stake=0, nonce=0))
    call.emit("account.registered", address=call.sender, name=p.name)


def faucet_drip(call: Call, p: FaucetDrip) -> None:
    limit = call.params.faucet_limit
    if limit == 0:
        raise NotAuthorized("this chain has no faucet; ask a funded account for a transfer")
    if p.amount > limit:
        raise NotAuthorized(f"the faucet gives at most {limit} units per drip; ask for {limit} or less")
    call.credit(call.sender, p.amount)
    call.emit("faucet.drip", to=call.sender, amount=p.amount)


def transfer(call: Call, p: Transfer) -> None:
    call.read.account(p.to)
    call.debit(call.sender, p.amount, "this transfer")
    call.credit(p.to, p.amount)
    call.emit("transfer", sender=call.sender, to=p.to, amount=p.amount)


def register_provider(call: Call, p: RegisterProvider) -> None:
    if call.exists(provider_key(call.sender)):
        raise RecordExists(f"account {call.sender} is already a provider; register machines with it")
    call.put(Provider(call.sender, p.name, p.description))
    call.emit("provider.registered", address=call.sender, name=p.name)


def deposit_stake(call: Call, p: DepositStake) -> None:
    account = call.debit(call.sender, p.amount, "this stake deposit")
    call.put(dataclasses.replace(account, stake=account.stake + p.amount))
    call.emit("stake.deposited", address=call.sender, amount=p.amount, stake=account.stake + p.amount)


def _serving(call: Call) -> list[str]:
    """The open deployments some machine of the sender is assigned to."""
    mine = {machine.machine_id for machine in call.read.machines(provider=call.sender)}
    return [
        order.order_id
        for order in call.read.orders()
        if order.kind == INFERENCE and order.state in OPEN_ORDER_STATES and mine.intersection(order.machines)
    ]


def withdraw_stake(call: Call, p: WithdrawStake) -> None:
    """Take stake back, but never below the serving stake while a machine serves: it is what a liar loses."""
    account = call.read.account(call.sender)
    if account.stake < p.amount:
        raise InsufficientFunds(
            f"cannot withdraw {p.amount} units: {call.sender} has {account.stake} staked; withdraw less",
            needed=p.amount,
            stake=account.stake,
        )
    floor = call.params.min_serving_stake
    if account.stake - p.amount < floor:
        serving = _serving(call)
        if serving:
            raise InvalidState(
                f"machines of {call.sender} serve deployment {', '.join(serving)}, which needs {floor} units "
                f"staked; withdraw at most {max(0, account.stake - floor)} until it ends"
            )
    call.put(dataclasses.replace(account, stake=account.stake - p.amount))
    call.credit(call.sender, p.amount)
    call.emit("stake.withdrawn", address=call.sender, amount=p.amount, stake=account.stake - p.amount)


HANDLERS: dict[type[Payload], Handler] = {
    RegisterAccount: register_account,
    FaucetDrip: faucet_drip,
    Transfer: transfer,
    RegisterProvider: register_provider,
    DepositStake: deposit_stake,
    WithdrawStake: withdraw_stake,
}
