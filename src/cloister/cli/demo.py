"""`cloister demo`: the main story on one machine, in a throw-away home, narrated step by step."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.rule import Rule

from cloister.cli.common import console, progress_bars
from cloister.cli.devnet import LedgerKind
from cloister.cli.offer import offers_table
from cloister.client.assets import demo_dataset_path, smollm2_path
from cloister.client.devnet import Devnet
from cloister.client.sdk import Client
from cloister.errors import NotAuthorized
from cloister.ledger.amounts import format_amount, parse_amount
from cloister.ledger.records import Pricing, Restrictions
from cloister.ledger.verify import verify_ledger

ROLES = {
    "alice": "model owner",
    "bob": "data owner",
    "carol": "AI developer",
}


def _step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


def demo(
    home: Annotated[
        Path | None, typer.Option("--demo-home", help="Run in this folder instead of a temporary one.")
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the devnet running and its folder afterwards.")] = False,
    ledger: Annotated[LedgerKind, typer.Option(help="The devnet's ledger.")] = LedgerKind.embedded,
) -> None:
    """Run the story end to end: devnet, accounts, encrypted model and dataset offers, the market, an audit."""
    model = smollm2_path()
    owned = home is None
    root = Path(tempfile.mkdtemp(prefix="cloister-demo-")) if home is None else home
    devnet = Devnet(root)
    try:
        _step(f"1. Start a devnet: {ledger.value} ledger + local blob store")
        info = devnet.up(ledger=ledger.value)
        console.print(f"ledger {info['ledger_url']} (chain {info['chain_id']}), blobs in {info['blob_store']}")

        _step("2. Create and fund accounts")
        clients: dict[str, Client] = {}
        for name, role in ROLES.items():
            cl = Client(home=root, account=name)
            cl.create_account(name)
            cl.fund(parse_amount(1000))
            clients[name] = cl
            console.print(f"{name:<6} {role:<13} {cl.address}  balance {format_amount(cl.account().balance)}")
        alice, bob = clients["alice"], clients["bob"]

        _step("3. The model owner publishes SmolLM2-135M (encrypted; the key stays with her)")
        with progress_bars() as progress:
            alice.progress = progress
            model_offer = alice.publish(
                "model",
                model,
                name="SmolLM2-135M-Instruct",
                description="Q4_1 GGUF, 135M parameters",
                pricing=Pricing("per_hour", parse_amount(2), 0),
                restrictions=Restrictions(("sim", "snp", "tdx"), (), (), 24),
            )
        console.print(f"offer {model_offer.offer_id}: {model_offer.content_digest}")

        _step("4. The data owner publishes a chat dataset")
        with progress_bars() as progress:
            bob.progress = progress
            data_offer = bob.publish(
                "dataset",
                demo_dataset_path(),
                name="cloister-support-chat",
                description="24 support conversations, chat JSONL",
                pricing=Pricing("fixed", parse_amount(5), 0),
                restrictions=Restrictions(("sim", "snp", "tdx"), (), (), None),
            )
        console.print(f"offer {data_offer.offer_id}: {data_offer.content_digest}")

        _step("5. The market, as every participant sees it on the ledger")
        console.print(offers_table(clients["carol"].ledger.offers()))

        _step("6. Only the owner can get the plaintext back")
        assert model_offer.content_digest is not None
        out = root / "model-roundtrip.gguf"
        with progress_bars() as progress:
            alice.progress = progress
            alice.download(model_offer.content_digest, out)
        console.print(f"alice downloaded and verified {out.stat().st_size} bytes against {model_offer.content_digest}")
        out.unlink()
        try:
            bob.download(model_offer.content_digest, root / "stolen.gguf")
        except NotAuthorized as refused:
            console.print(f"bob is refused: [yellow]{refused.message}[/]")

        _step("7. Anyone can audit the ledger")
        if ledger is LedgerKind.embedded:
            report = verify_ledger(devnet.db_path)
            console.print(f"replayed {report.height} blocks from genesis: head {report.head_hash}")
        else:
            head = clients["carol"].ledger.head()
            console.print(f"the contract's history is public on the chain: height {head.height}, head {head.hash}")
        for cl in clients.values():
            cl.close()
    finally:
        if not keep:
            devnet.down()
            if owned:
                shutil.rmtree(root, ignore_errors=True)
    _step("done")
    if keep:
        console.print(f"the devnet keeps running in {root}; stop it with `cloister --home {root} devnet down`")
