"""`cloister gateway key create` and `cloister gateway run` against a real devnet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.cli.test_cli import run
from tests.ledger.conftest import free_port

from cloister.consensus.apikeys import parse_api_key
from cloister.keystore import Keystore


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    run(home, "devnet", "up")
    try:
        yield home
    finally:
        run(home, "devnet", "down", check=False)


def test_key_create_prints_a_key_the_account_signed(home: Path) -> None:
    gateway = json.loads(run(home, "account", "create", "gw", "--json").stdout)["address"]
    user = json.loads(run(home, "account", "create", "user", "--json").stdout)["address"]
    text = run(home, "--account", "user", "gateway", "key", "create", "--gateway", gateway).stdout.strip()
    key = parse_api_key(text)
    assert (key.account, key.gateway, key.consensus) == (user, gateway, None)
    key.verify(Keystore(home).load_account("user").public.signing_key)
    as_json = json.loads(
        run(
            home,
            "-a",
            "user",
            "gateway",
            "key",
            "create",
            "--gateway",
            gateway,
            "--consensus",
            "cross:0.10,2",
            "--json",
        ).stdout
    )
    assert parse_api_key(as_json["api_key"]).consensus == "cross:0.1,2"


def test_key_create_refuses_bad_input(home: Path) -> None:
    run(home, "account", "create", "user")
    bad_gateway = run(home, "gateway", "key", "create", "--gateway", "not-an-address", check=False)
    assert bad_gateway.returncode == 1 and "ledger address" in bad_gateway.stderr
    gateway = json.loads(run(home, "account", "create", "gw", "--json").stdout)["address"]
    bad_mode = run(
        home, "-a", "user", "gateway", "key", "create", "--gateway", gateway, "--consensus", "most", check=False
    )
    assert bad_mode.returncode == 1 and "consensus mode" in bad_mode.stderr
    assert "Traceback" not in bad_mode.stderr


def test_run_serves_until_stopped(home: Path, tmp_path: Path) -> None:
    gateway = json.loads(run(home, "account", "create", "gw", "--json").stdout)["address"]
    run(home, "account", "create", "user")
    key = run(home, "-a", "user", "gateway", "key", "create", "--gateway", gateway).stdout.strip()
    port = free_port()
    env = {**os.environ, "CLOISTER_HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-m", "cloister", "gateway", "run", "--identity", "gw", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health").json()
                break
            except httpx.TransportError:
                assert process.poll() is None, process.communicate()
                assert time.monotonic() < deadline, "the gateway did not start"
                time.sleep(0.2)
        assert health == {"status": "ok", "gateway": gateway, "deployments": 0}
        models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
        assert models == {"object": "list", "data": []}
        assert httpx.get(f"{url}/v1/models").status_code == 401
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert "Traceback" not in err, err
    assert (home / "gateways" / "gw" / "gateway.db").is_file()
