"""`cloister verify receipt`: a file or an id fetched from a gateway, optionally checked against a real ledger."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.consensus.samples import GATEWAY, Replica, build_receipt, identity, signed
from tests.ledger.attested import challenged_nonce, registration
from tests.ledger.conftest import GENESIS_TIME, ThreadedServer, make_genesis
from typer.testing import CliRunner

from cloister.attest.tcb import Tcb
from cloister.cli.main import app
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.records import MachineSpecs
from cloister.ledger.server import create_app
from cloister.ledger.transactions import ChallengeMachine, RegisterProvider
from cloister.ledger.wallet import Wallet

runner = CliRunner()
SPECS = MachineSpecs(cpu_cores=8, memory_gib=32, gpus=(), disk_gib=100)


def verify(home: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(app, ["--home", str(home), "verify", "receipt", *args, "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def receipt_file(tmp_path: Path) -> Path:
    path = tmp_path / "receipt.json"
    path.write_bytes(signed(build_receipt("sampling:3")).to_bytes())
    return path


def test_a_receipt_file_verifies(tmp_path: Path, receipt_file: Path) -> None:
    code, body = verify(tmp_path, str(receipt_file))
    assert code == 0 and body["ok"] and body["error"] is None
    assert [c["name"] for c in body["checks"]] == [
        "format", "gateway signature", "selection", "commitments", "verdict", "content"
    ]  # fmt: skip
    assert body["receipt"]["mode"] == "sampling:3" and body["receipt"]["verdict"]["agreed"]
    text = runner.invoke(app, ["--home", str(tmp_path), "verify", "receipt", str(receipt_file)])
    assert text.exit_code == 0 and "receipt verified" in text.stdout and "sampling:3" in text.stdout


def test_pinned_gateway_key(tmp_path: Path, receipt_file: Path) -> None:
    code, _ = verify(tmp_path, str(receipt_file), "--gateway-key", GATEWAY.public.signing_key.hex())
    assert code == 0
    code, body = verify(tmp_path, str(receipt_file), "--gateway-key", identity("x").public.signing_key.hex())
    assert code == 1 and body["error"]["details"]["check"] == "gateway signature"
    bad = runner.invoke(app, ["--home", str(tmp_path), "verify", "receipt", str(receipt_file), "--gateway-key", "zz"])
    assert bad.exit_code == 2


def test_a_tampered_file_fails_naming_the_check(tmp_path: Path, receipt_file: Path) -> None:
    data = receipt_file.read_bytes()
    receipt_file.write_bytes(data.replace(b'"sampling:3"', b'"sampling:4"'))
    code, body = verify(tmp_path, str(receipt_file))
    assert code == 1 and not body["ok"] and body["receipt"] is None
    assert body["checks"][-1] == {"name": "gateway signature", "passed": False, "detail": body["error"]["message"]}
    text = runner.invoke(app, ["--home", str(tmp_path), "verify", "receipt", str(receipt_file)])
    assert text.exit_code == 1 and "rejected" in text.stdout


def test_an_id_needs_a_gateway(tmp_path: Path) -> None:
    code, body = verify(tmp_path, "rc-00000000000000a1")
    assert code == 1 and body["error"]["code"] == "config" and "--gateway" in body["error"]["message"]


class _Receipts(BaseHTTPRequestHandler):
    """A gateway's ``GET /v1/receipts/{id}``, serving one stored receipt under whatever id it was stored."""

    stored: dict[str, bytes] = {}

    def do_GET(self) -> None:
        data = self.stored.get(self.path.removeprefix("/v1/receipts/"))
        status, body = (200, data) if data else (404, b'{"error":{"code":"receipt_not_found","message":"no"}}')
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def gateway() -> Iterator[str]:
    data = signed(build_receipt("cross:1,2")).to_bytes()
    _Receipts.stored = {"rc-00000000000000a1": data, "rc-00000000000000b2": data}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receipts)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_receipt_fetched_by_id(tmp_path: Path, gateway: str) -> None:
    code, body = verify(tmp_path, "rc-00000000000000a1", "--gateway", gateway)
    assert code == 0 and body["checks"][-1]["name"] == "receipt id"
    code, body = verify(tmp_path, "rc-00000000000000b2", "--gateway", gateway)  # another receipt under this id
    assert code == 1 and body["error"]["details"]["check"] == "receipt id"
    code, body = verify(tmp_path, "rc-00000000000000c3", "--gateway", gateway)
    assert code == 1 and body["error"]["code"] == "receipt_not_found"


def test_replicas_and_head_against_a_ledger(tmp_path: Path) -> None:
    """Replicas registered with real sim TCBs on a served embedded ledger; the receipt is seeded by its head."""
    ledger = EmbeddedLedger.create(tmp_path / "ledger.db", make_genesis(), clock=lambda: float(GENESIS_TIME))
    try:
        provider = Wallet(identity("provider"), ledger)
        provider.register("provider")
        provider.faucet(1_000_000)
        provider.send(RegisterProvider("acme", "inference boxes"))
        replicas: dict[str, Replica] = {}
        for i in range(4):
            loader = identity(f"ledger-loader-{i}")
            nonce = challenged_nonce([(e.kind, e.attrs) for e in provider.send(ChallengeMachine()).events])
            events = provider.send(registration(nonce, SPECS, loader=loader.public)).events
            (machine_id,) = [e.attrs["machine_id"] for e in events if e.kind == "machine.registered"]
            tcb_id = Tcb.from_bytes(ledger.machine(machine_id).tcb_evidence).digest
            replicas[machine_id] = Replica(machine_id, loader, tcb_id)
        head = ledger.head()
        receipt = build_receipt(
            "sampling:3", replicas=replicas, candidates=tuple(replicas), head=(head.height, head.hash)
        )
        good = tmp_path / "good.json"
        good.write_bytes(signed(receipt).to_bytes())
        stale = tmp_path / "stale.json"
        stale.write_bytes(
            signed(
                build_receipt("single", replicas=replicas, candidates=tuple(replicas), head=(1, "0x" + "00" * 32))
            ).to_bytes()
        )
        impostor = dict(replicas)
        first = receipt.selection.selected[0]
        impostor[first] = Replica(first, identity("not the attested loader"), replicas[first].tcb_id)
        forged = tmp_path / "forged.json"
        forged.write_bytes(
            signed(
                build_receipt(
                    "sampling:3", replicas=impostor, candidates=tuple(replicas), head=(head.height, head.hash)
                )
            ).to_bytes()
        )
        with ThreadedServer(create_app(ledger)) as served:
            code, body = verify(tmp_path, str(good), "--ledger", served.url)
            assert code == 0, body
            assert [c["name"] for c in body["checks"]][:4] == ["format", "gateway signature", "replicas", "head"]
            code, body = verify(tmp_path, str(stale), "--ledger", served.url)
            assert code == 1 and body["error"]["details"]["check"] == "head"
            code, body = verify(tmp_path, str(forged), "--ledger", served.url)
            assert code == 1 and body["error"]["details"]["check"] == "replicas"
            code, _ = verify(tmp_path, str(forged))  # offline, the forged loader key is self-consistent
            assert code == 0
            garbled = tmp_path / "garbled.json"
            garbled.write_bytes(good.read_bytes()[:-5])
            code, body = verify(tmp_path, str(garbled), "--ledger", served.url)
            assert code == 1 and body["error"]["details"]["check"] == "format"
    finally:
        ledger.close()
