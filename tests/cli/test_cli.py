"""The `cloister` command end to end: a real devnet (detached ledger server) in a temporary home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


def run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOISTER_HOME": str(home), "COLUMNS": "200"}
    for name in ("CLOISTER_LEDGER", "CLOISTER_BLOBS", "CLOISTER_ACCOUNT"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "cloister", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"cloister {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    run(home, "devnet", "up")
    try:
        yield home
    finally:
        run(home, "devnet", "down", check=False)


def test_help_explains_every_command() -> None:
    result = run(Path("/nonexistent"), "--help")
    for command in ("account", "devnet", "offer", "content", "ledger", "demo"):
        assert command in result.stdout
    publish = run(Path("/nonexistent"), "offer", "publish", "--help").stdout
    assert "--price-per-hour" in publish and "--allow-engine" in publish


def test_commands_without_a_devnet_fail_with_a_hint(tmp_path: Path) -> None:
    result = run(tmp_path, "offer", "list", check=False)
    assert result.returncode == 1
    assert "cloister devnet up" in result.stderr
    assert "Traceback" not in result.stderr


def test_publish_list_download_verify_export(home: Path, tmp_path: Path) -> None:
    status = json.loads(run(home, "devnet", "status", "--json").stdout)
    assert status["running"] and status["head"]["height"] == 1, "the devnet's gateway registered its account"

    alice = json.loads(run(home, "account", "create", "alice", "--fund", "100", "--json").stdout)
    assert alice["balance"] == 100_000_000
    run(home, "account", "create", "bob")

    model = tmp_path / "weights.bin"
    model.write_bytes(os.urandom(3 * (1 << 20) + 17))
    offer = json.loads(
        run(
            home,
            "-a",
            "alice",
            "offer",
            "publish",
            "model",
            str(model),
            "--price-per-hour",
            "2",
            "--allow-platform",
            "sim",
            "--max-lease-hours",
            "24",
            "--json",
        ).stdout
    )
    assert offer["kind"] == "model" and offer["pricing"]["amount"] == 2_000_000
    assert offer["restrictions"]["platforms"] == ["sim"]

    listed = json.loads(run(home, "offer", "list", "--json").stdout)
    assert [o["offer_id"] for o in listed] == [offer["offer_id"]]
    assert json.loads(run(home, "offer", "show", offer["offer_id"], "--json").stdout) == offer
    assert "SmolLM2" not in run(home, "offer", "list").stdout  # table renders without --json

    out = tmp_path / "copy.bin"
    run(home, "-a", "alice", "content", "download", offer["content_digest"], "-o", str(out))
    assert out.read_bytes() == model.read_bytes()

    refused = run(
        home,
        "-a",
        "bob",
        "content",
        "download",
        offer["content_digest"],
        "-o",
        str(tmp_path / "x"),
        check=False,
    )
    assert refused.returncode == 1 and "only its owner" in refused.stderr
    assert not (tmp_path / "x").exists()

    verified = json.loads(run(home, "ledger", "verify", "--json").stdout)
    assert verified["ok"] and verified["height"] == 5  # 3 registrations (gateway, alice, bob), 1 drip, 1 offer
    export = tmp_path / "log.jsonl"
    run(home, "ledger", "export", "-o", str(export))
    blocks = [json.loads(line) for line in export.read_text().splitlines()]
    assert len(blocks) >= 4


def test_price_options_are_exclusive(home: Path, tmp_path: Path) -> None:
    run(home, "account", "create", "alice")
    data = tmp_path / "d.jsonl"
    data.write_text("{}\n")
    both = run(home, "offer", "publish", "dataset", str(data), "--free", "--price-fixed", "1", check=False)
    assert both.returncode == 1 and "exactly one price" in both.stderr
    bad_engine = run(home, "offer", "publish", "dataset", str(data), "--free", "--allow-engine", "abc", check=False)
    assert bad_engine.returncode == 1 and "not a digest" in bad_engine.stderr


def test_devnet_survives_restart_and_keeps_its_data(home: Path) -> None:
    from cloister.client.devnet import Devnet
    from cloister.ledger.embedded import EmbeddedLedger

    vendor_key = home / "devnet" / "sim-vendor" / "root.key"
    assert vendor_key.stat().st_mode & 0o777 == 0o600, "the simulated vendor's root key is private"
    root_pem = Devnet(home).sim_vendor().root_pem
    with EmbeddedLedger.open(home / "devnet" / "ledger.db") as ledger:
        assert ledger.genesis.params.sim_roots == (root_pem,), "genesis trusts exactly this devnet's sim vendor"
    run(home, "account", "create", "alice", "--fund", "5")
    run(home, "devnet", "down")
    assert json.loads(run(home, "devnet", "status", "--json", check=False).stdout)["running"] is False
    run(home, "devnet", "up")
    shown = json.loads(run(home, "account", "show", "--json").stdout)
    assert shown["balance"] == 5_000_000


def test_export_pages_through_every_block_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cloister.cli import ledger as ledger_cli
    from cloister.cli.main import app
    from cloister.crypto.identity import Identity
    from cloister.ledger.embedded import EmbeddedLedger
    from cloister.ledger.genesis import Genesis
    from cloister.ledger.wallet import Wallet

    db = tmp_path / "ledger.db"
    with EmbeddedLedger.create(db, Genesis.devnet(1_800_000_000)) as ledger:
        wallet = Wallet(Identity.generate(), ledger)
        wallet.register("alice")
        for _ in range(4):
            wallet.faucet(1)
    monkeypatch.setattr(ledger_cli, "EXPORT_PAGE", 2)
    out = tmp_path / "log.jsonl"
    result = CliRunner().invoke(app, ["ledger", "export", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    heights = [json.loads(line)["height"] for line in out.read_text().splitlines()]
    assert heights == [1, 2, 3, 4, 5]


def test_devnet_starts_and_stops_provider_nodes(tmp_path: Path) -> None:
    import time

    home = tmp_path / "home"
    try:
        run(home, "devnet", "up", "--nodes", "2")
        deadline = time.monotonic() + 120
        machines: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline and len(machines) < 2:
            time.sleep(1)
            result = run(home, "offer", "list", "--kind", "compute", "--json", check=False)
            machines = json.loads(result.stdout) if result.returncode == 0 else []
        assert len(machines) == 2, "both nodes registered attested machines and published compute offers"
        pids = [int(p.read_text()) for p in (home / "devnet" / "nodes").glob("*.pid")]
        assert len(pids) == 2
    finally:
        run(home, "devnet", "down", check=False)
    assert not list((home / "devnet" / "nodes").glob("*.pid")), "down stops the nodes"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
