"""The CLI on the EVM ledger: a devnet on anvil, the same commands, and `cloister ledger deploy` to any chain."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from cloister.cli.main import app
from cloister.ledger.evm.deploy import Deployment
from cloister.ledger.evm.devnet import start_anvil

from .test_cli import run

# anvil's first development account (from its public test mnemonic): funded with ether on every fresh anvil.
ANVIL_DEV_KEY = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def test_devnet_on_evm_runs_the_same_commands_and_survives_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    try:
        info = json.loads(run(home, "devnet", "up", "--ledger", "evm", "--json").stdout)
        assert info["ledger"] == "evm" and info["ledger_url"].startswith("http://127.0.0.1:")
        again = json.loads(run(home, "devnet", "up", "--ledger", "evm", "--json").stdout)
        assert again["ledger_url"] == info["ledger_url"], "up on a running devnet changes nothing"
        run(home, "account", "create", "alice", "--fund", "10")
        data = tmp_path / "d.jsonl"
        data.write_text('{"messages": []}\n')
        offer = json.loads(run(home, "offer", "publish", "dataset", str(data), "--price-fixed", "1", "--json").stdout)
        assert [o["offer_id"] for o in json.loads(run(home, "offer", "list", "--json").stdout)] == [offer["offer_id"]]
        run(home, "content", "download", offer["content_digest"], "-o", str(tmp_path / "copy"))
        assert (tmp_path / "copy").read_text() == data.read_text()

        run(home, "devnet", "down")
        mismatch = run(home, "devnet", "up", "--ledger", "embedded", check=False)
        assert mismatch.returncode == 1 and "created with the evm ledger" in mismatch.stderr
        run(home, "devnet", "up", "--ledger", "evm")
        assert json.loads(run(home, "account", "show", "--json").stdout)["balance"] == 10_000_000
        status = json.loads(run(home, "devnet", "status", "--json").stdout)
        assert status["running"] and status["head"]["height"] >= 3
    finally:
        run(home, "devnet", "down", check=False)


def test_ledger_deploy_to_any_chain(tmp_path: Path) -> None:
    key = tmp_path / "deployer.key"
    key.write_text(ANVIL_DEV_KEY)
    out = tmp_path / "deployment.json"
    with start_anvil() as anvil:
        result = CliRunner().invoke(
            app, ["ledger", "deploy", "--rpc", anvil.url, "--key-file", str(key), "-o", str(out), "--chain-id", "c1"]
        )
        assert result.exit_code == 0, result.output
        deployment = Deployment.load(out)
        assert deployment.genesis.chain_id == "c1" and deployment.genesis.params.faucet_limit == 0
        again = CliRunner().invoke(
            app, ["ledger", "deploy", "--rpc", anvil.url, "--key-file", str(key), "-o", str(out)]
        )
        assert again.exit_code != 0 and "exists" in str(again.exception or again.output)
