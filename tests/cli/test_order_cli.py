"""The fine-tuning story through the `cloister` command on a devnet, with a tiny model: every role by hand."""

from __future__ import annotations

import json
from pathlib import Path

from cloister.client.assets import demo_dataset_path
from cloister.engines.tiny import make_tiny_model
from cloister.runtime.archive import pack_folder

from .test_cli import run


def test_order_is_granted_run_paid_and_delivered(tmp_path: Path) -> None:
    home = tmp_path / "home"

    def cl(*args: str, check: bool = True) -> str:
        return run(home, *args, check=check).stdout

    try:
        cl("devnet", "up")
        for name in ("alice", "bob", "eve", "carol", "node1"):
            cl("account", "create", name, "--fund", "1000")
        corpus = demo_dataset_path().read_text().splitlines()
        model = tmp_path / "tiny-model.tar"
        pack_folder(make_tiny_model(tmp_path / "tiny", corpus), model)
        model_offer = json.loads(
            cl("-a", "alice", "offer", "publish", "model", str(model), "--price-per-hour", "2", "--json")
        )
        engine = json.loads(cl("-a", "eve", "engine", "publish", "lora_finetune", "--price-fixed", "1", "--json"))
        dataset = json.loads(
            cl(
                "-a", "bob", "offer", "publish", "dataset", str(demo_dataset_path()), "--price-fixed", "3",
                "--allow-engine", engine["content_digest"], "--json",
            )
        )  # fmt: skip
        cl("-a", "node1", "node", "run", "--once", "--platform", "sim")  # registers the machine and its compute offer

        params = ["--param", "epochs=1", "--param", "max_length=96", "--param", "max_new_tokens=8"]
        order = json.loads(
            cl(
                "-a", "carol", "order", "create", "--model", model_offer["offer_id"], "--dataset",
                dataset["offer_id"], "--engine", engine["offer_id"], "--deposit", "50", *params, "--json",
            )
        )  # fmt: skip
        assert order["state"] == "pending_grants"
        for owner in ("alice", "bob", "eve"):
            assert "granted" in cl("-a", owner, "keeper", "run", "--once")
        assert json.loads(cl("order", "show", order["order_id"], "--json"))["state"] == "ready"

        cl("-a", "node1", "node", "run", "--once", "--platform", "sim")
        shown = json.loads(cl("order", "show", order["order_id"], "--json"))
        assert shown["state"] == "completed", shown

        out = tmp_path / "result"
        result = cl("-a", "carol", "order", "result", order["order_id"], "-o", str(out))
        assert "✓ signature" in result and (out / "adapter" / "adapter_model.safetensors").exists()
        refused = run(home, "-a", "bob", "order", "result", order["order_id"], "-o", str(tmp_path / "x"), check=False)
        assert refused.returncode == 1 and "only its owner" in refused.stderr

        verified = json.loads(cl("verify", "report", order["order_id"], "--json"))
        assert verified["ok"] and {c["name"] for c in verified["checks"]} >= {"signature", "cpu.report_signature"}
        verified = json.loads(cl("verify", "manifest", str(out / "manifest.json"), "--json"))
        assert verified["ok"], verified

        balances = {n: json.loads(cl("-a", n, "account", "show", "--json"))["balance"] for n in ("bob", "eve")}
        assert balances == {"bob": 1003_000_000, "eve": 1001_000_000}, "fixed prices paid in full to their owners"
    finally:
        run(home, "devnet", "down", check=False)
