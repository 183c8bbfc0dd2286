"""EVM ledger on anvil: transactions per second, confirmation latency, and the gas of every transaction type.

Runs (transfers signed beforehand, as in bench/ledger.py; anvil mines each transaction at once):

- **floor** — the least an EVM submit must do: sign a plain ether transfer, send it, wait for its receipt;
- **evm, 1 thread** / **evm, N threads** — ``EvmLedger.submit`` of Cloister transfers (envelope check, gas
  estimate, contract call, receipt, event decoding), each against the floor on the same number of threads;
- **embedded, 1 thread** — ``EmbeddedLedger.submit`` on the same pre-signed transfers, for scale.

Then one full market story on a fresh chain, reporting ``gasUsed`` per transaction type and its cost at 1 gwei.

    .venv/bin/python bench/ledger_evm.py [--txs 400] [--threads 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from eth_account.signers.local import LocalAccount

from cloister.attest.policy import AppraisalPolicy
from cloister.attest.sim import SimVendor
from cloister.attest.tcb import build_sim_tcb
from cloister.crypto.identity import Identity
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.evm.devnet import deploy_to_anvil, new_key, start_anvil
from cloister.ledger.evm.keys import Keyring
from cloister.ledger.evm.ledger import EvmLedger
from cloister.ledger.evm.rpc import Rpc
from cloister.ledger.evm.transact import AnvilGas
from cloister.ledger.genesis import ContractParams, Genesis, policy_json
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import MachineSpecs, Pricing, Restrictions
from cloister.ledger.transactions import (
    CancelOrder,
    ChallengeMachine,
    CompleteOrder,
    CreateOffer,
    CreateOrder,
    DepositStake,
    FailOrder,
    Heartbeat,
    Payload,
    PostGrant,
    RefuseGrant,
    RegisterMachine,
    RegisterProvider,
    RetireMachine,
    RetireOffer,
    StartOrder,
    WithdrawStake,
)
from cloister.ledger.wallet import Wallet
from ledger import CHAIN, Run, presigned, timed

GWEI = 10**9
EPOCH = datetime(1970, 1, 1, 1, tzinfo=UTC)
VENDOR = SimVendor.generate(now=EPOCH, lifetime=timedelta(days=150 * 365))
CHIP = VENDOR.issue_chip("bench-node", now=EPOCH, lifetime=timedelta(days=150 * 365))
SPECS = MachineSpecs(cpu_cores=8, memory_gib=32, gpus=("H100",), disk_gib=500)


def genesis() -> Genesis:
    params = ContractParams(
        faucet_limit=10**12,
        attestation_policy=policy_json(AppraisalPolicy.packaged("devnet")),
        sim_roots=(VENDOR.root_pem,),
    )
    return Genesis(CHAIN, int(time.time()), params)


def funded(ledger: Ledger, keyring: Keyring | None, count: int) -> list[Identity]:
    identities = [Identity.generate() for _ in range(count)]
    for identity in identities:
        if keyring is not None:
            keyring.add(identity)
        wallet = Wallet(identity, ledger)
        wallet.register("bench")
        wallet.faucet(10**9)
    return identities


def floor(url: str, batches: int, per_batch: int) -> Run:
    """Plain ether transfers, nothing else: sign (nonce and gas known), send raw, poll for the receipt."""
    rpc = Rpc(url)
    chain_id = int(rpc.request("eth_chainId", []), 16)
    price = int(rpc.request("eth_gasPrice", []), 16) * 2
    accounts = [new_key() for _ in range(batches)]
    sink = new_key().address
    for account in accounts:
        AnvilGas().top_up(rpc, account.address)
    jobs = [[(account, nonce) for nonce in range(per_batch)] for account in accounts]

    def send(job: tuple[LocalAccount, int]) -> None:
        account, nonce = job
        tx = {"chainId": chain_id, "nonce": nonce, "gas": 21_000, "gasPrice": price, "to": sink, "value": 1}
        raw = account.sign_transaction(tx).raw_transaction
        tx_hash = rpc.request("eth_sendRawTransaction", ["0x" + bytes(raw).hex()])
        while rpc.request("eth_getTransactionReceipt", [tx_hash]) is None:
            time.sleep(0.001)

    return timed(send, jobs)  # type: ignore[arg-type]


def evm_run(url: str, deployment: object, threads: int, txs: int) -> Run:
    keyring = Keyring()
    ledger = EvmLedger(Rpc(url), deployment, keyring, gas=AnvilGas())  # type: ignore[arg-type]
    senders = funded(ledger, keyring, threads)
    sink = funded(ledger, keyring, 1)[0].address
    return timed(ledger.submit, presigned(senders, txs // threads, sink))


def embedded_run(workdir: Path, txs: int) -> Run:
    with EmbeddedLedger.create(workdir / "embedded.db", genesis()) as ledger:
        senders = funded(ledger, None, 1)
        sink = funded(ledger, None, 1)[0].address
        return timed(ledger.submit, presigned(senders, txs, sink))


def gas_table(url: str, ledger: EvmLedger, keyring: Keyring) -> list[tuple[str, int]]:
    """One market story; the gas each transaction type used (one transaction per block on anvil)."""
    rows: list[tuple[str, int]] = []

    def wallet(name: str) -> Wallet:
        found = Wallet(keyring.add(Identity.generate()).identity, ledger)
        note("account.register", found.register(name))
        note("faucet.drip", found.faucet(10**9))
        return found

    def note(kind: str, receipt: TxReceipt) -> TxReceipt:
        block = ledger.rpc.request("eth_getBlockByNumber", [hex(receipt.height), False])
        eth_receipt = ledger.rpc.request("eth_getTransactionReceipt", [block["transactions"][0]])
        rows.append((kind, int(eth_receipt["gasUsed"], 16)))
        return receipt

    def send(who: Wallet, payload: Payload) -> TxReceipt:
        return note(payload.TYPE, who.send(payload))

    def event(receipt: TxReceipt, kind: str, attr: str) -> str:
        return str(next(e.attrs[attr] for e in receipt.events if e.kind == kind))

    provider, owner, developer = wallet("provider"), wallet("owner"), wallet("developer")
    note("transfer", developer.transfer(owner.address, 5))
    send(provider, RegisterProvider("acme", "bench machines"))
    send(provider, DepositStake(1000))
    send(provider, WithdrawStake(500))
    machines = []
    for _ in range(2):
        nonce = bytes.fromhex(event(send(provider, ChallengeMachine()), "machine.challenged", "nonce"))
        loader = Identity.generate().public
        tcb = build_sim_tcb(
            CHIP, None, loader=loader, nonce=nonce, specs=SPECS.to_json(), measurement=hashlib.sha384(b"x").digest()
        )
        receipt = send(provider, RegisterMachine("eu-west", tcb.to_bytes()))
        machines.append(event(receipt, "machine.registered", "machine_id"))
    send(provider, Heartbeat(machines[0]))
    compute = CreateOffer(
        "compute", "box", "", None, None, None, Pricing("per_hour", 3, 0), Restrictions(), tuple(machines)
    )
    event(send(provider, compute), "offer.created", "offer_id")
    offers = {}
    for serial, kind in enumerate(("model", "dataset", "engine")):
        digest = "sha256:" + f"{serial:064x}"
        pricing = Pricing("per_hour", 2, 0) if kind == "model" else Pricing("fixed", 1, 0)
        offer = CreateOffer(kind, kind, "", digest, "file:///blob", 123, pricing, Restrictions(), ())  # type: ignore[arg-type]
        offers[kind] = event(send(owner, offer), "offer.created", "offer_id")

    def order() -> tuple[str, str]:
        payload = CreateOrder("finetune", offers["model"], (offers["dataset"],), offers["engine"], None, {}, 2, 1, 100)
        receipt = send(developer, payload)
        return event(receipt, "order.created", "order_id"), event(receipt, "order.assigned", "machines")[2:-2]

    first, machine = order()
    for kind in ("model", "dataset", "engine"):
        send(owner, PostGrant(first, offers[kind], machine, b"sealed key " * 8))
    send(provider, StartOrder(first, machine))
    send(provider, CompleteOrder(first, machine, 3600, "sha256:" + "5e" * 32, None, "file:///delivery"))
    second, machine = order()
    send(owner, RefuseGrant(second, offers["model"], machine, "the machine's TCB is below my minimum"))
    send(provider, FailOrder(second, machine, "out of memory", None))
    third, _ = order()
    send(developer, CancelOrder(third))
    send(owner, RetireOffer(offers["model"]))
    send(provider, RetireMachine(machines[1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--txs", type=int, default=400, help="transfers per timed run")
    parser.add_argument("--threads", type=int, default=4, help="client threads for the concurrent runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cloister-bench-evm-") as tmp:
        workdir = Path(tmp)
        with start_anvil(log=workdir / "anvil.log") as anvil:
            registrar = new_key()
            deployment = deploy_to_anvil(anvil.url, genesis(), registrar.address)
            floor1 = floor(anvil.url, 1, args.txs)
            one = evm_run(anvil.url, deployment, 1, args.txs)
            floor_n = floor(anvil.url, args.threads, args.txs // args.threads)
            many = evm_run(anvil.url, deployment, args.threads, args.txs)
            keyring = Keyring()
            story = EvmLedger(Rpc(anvil.url), deployment, keyring, gas=AnvilGas(), registrar=registrar)
            gas = gas_table(anvil.url, story, keyring)
        embedded = embedded_run(workdir, args.txs)

    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(f"{'run':<20} {'tx/s':>8} {'p50 ms':>8} {'p99 ms':>8}  {'baseline':<12} {'tx/s':>8} {'ratio':>6}")
    rows = [
        ("evm, 1 thread", one, "floor", floor1),
        (f"evm, {args.threads} threads", many, "floor", floor_n),
        ("evm, 1 thread", one, "embedded", embedded),
    ]
    for name, run, base_name, base in rows:
        print(
            f"{name:<20} {run.tx_per_s:>8.0f} {run.percentile(50):>8.2f} {run.percentile(99):>8.2f}"
            f"  {base_name:<12} {base.tx_per_s:>8.0f} {run.tx_per_s / base.tx_per_s:>6.2f}"
        )
    print("\ngas used per transaction type (cost in the chain's native coin at 1 gwei)")
    seen: dict[str, list[int]] = {}
    for kind, used in gas:
        seen.setdefault(kind, []).append(used)
    for kind, used in seen.items():
        top = max(used)
        print(
            f"{kind:<20} {top:>10,} gas  {top * GWEI / 10**18:.6f}"
            + (f"  (min {min(used):,})" if len(used) > 1 else "")
        )


if __name__ == "__main__":
    main()
