"""A whole order on one machine, without a ledger: owners publish sealed content, grant keys, a loader runs it.

The engine is a small real engine bundle (engine.toml + a Python package) that reads its inputs, touches a
marker file outside the workspace (so a test can tell whether it ever started), writes progress lines, one
checkpoint per step, an ``adapter/`` folder and a ``metrics.json``, and resumes from the newest checkpoint.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloister.crypto.digest import digest_bytes
from cloister.crypto.grants import seal_key_grant
from cloister.crypto.identity import Identity
from cloister.crypto.stream import generate_key, seal_stream
from cloister.engines.bundle import pack
from cloister.ledger.records import Account, KeyGrant, Offer, Order, Pricing, Restrictions
from cloister.runtime.loader import TrustedLoader
from cloister.storage import LocalBlobStore

ENGINE_TOML = """\
name = "toy"
version = "1.0.0"
entrypoint = "toy.main"

[inputs.model]
description = "one file"
min = 1
max = 1

[inputs.datasets]
description = "files"

[outputs.adapter]
description = "a folder"

[outputs."metrics.json"]
description = "loss curve"

[parameters.steps]
type = "int"
default = 3
description = "steps to run"

[parameters.learning_rate]
type = "float"
default = 0.5
description = "ignored"

[parameters.marker]
type = "str"
default = ""
description = "file to touch when the engine starts"

[parameters.sleep]
type = "float"
default = 0.0
description = "seconds to sleep per step"
"""

ENGINE_MAIN = """\
import hashlib
import json
import os
import time
from pathlib import Path

job = json.loads(Path(os.environ["CLOISTER_JOB"]).read_text())
params = job["params"]
if params["marker"]:
    Path(params["marker"]).write_text("started")
digest = hashlib.sha256()
for role in sorted(job["inputs"]):
    for path in job["inputs"][role]:
        digest.update(Path(path).read_bytes())
ckpt = Path(job["checkpoint_dir"])
done = sorted(int(p.name[5:]) for p in ckpt.glob("step-*"))
start = done[-1] if done else 0
losses = []
for step in range(start + 1, params["steps"] + 1):
    time.sleep(params["sleep"])
    losses.append(1.0 / step)
    partial = ckpt / f".partial-{step}"
    partial.mkdir()
    (partial / "state.json").write_text(json.dumps({"step": step}))
    partial.rename(ckpt / f"step-{step:08d}")
    with open(job["progress_file"], "a") as progress:
        progress.write(json.dumps({"step": step, "loss": losses[-1], "tokens": 10 * step}) + "\\n")
out = Path(job["outputs_dir"])
(out / "adapter").mkdir()
(out / "adapter" / "weights.bin").write_bytes(digest.digest())
(out / "adapter" / "config.json").write_text(json.dumps({"resumed_from": start}))
metrics = {
    "loss_curve": [{"step": start + i + 1, "loss": loss} for i, loss in enumerate(losses)],
    "evaluation": {"base": {"f1": 0.0}, "tuned": {"f1": 0.75}},
}
(out / "metrics.json").write_text(json.dumps(metrics))
"""

MODEL_TEXT = b"model weights " * 100
DATASET_TEXT = b'{"messages": []}\n' * 50


def write_engine(folder: Path) -> Path:
    (folder / "toy").mkdir(parents=True)
    (folder / "engine.toml").write_text(ENGINE_TOML)
    (folder / "toy" / "__init__.py").write_text("")
    (folder / "toy" / "main.py").write_text(ENGINE_MAIN)
    return folder


def _id(prefix: str, n: int) -> str:
    return f"{prefix}{n:016x}"


@dataclass
class Content:
    offer: Offer
    dek: bytes
    owner: Identity


@dataclass
class Scenario:
    """One order with a model, two datasets and an engine, each from its own owner, and one machine."""

    root: Path
    store: LocalBlobStore
    loader_identity: Identity
    machine_id: str
    developer: Identity
    contents: dict[str, Content] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    order_id: str = _id("or-", 1)

    @property
    def marker(self) -> Path:
        return self.root / "engine-started"

    def publish(self, n: int, kind: str, name: str, data: bytes, **restrictions: Any) -> Content:
        owner, dek = Identity.generate(), generate_key()
        sealed = io.BytesIO()
        seal_stream(dek, io.BytesIO(data), sealed)
        sealed.seek(0)
        ref = self.store.put(sealed)
        offer = Offer(
            offer_id=_id("of-", n),
            owner=owner.address,
            kind=kind,  # type: ignore[arg-type]
            name=name,
            description="",
            content_digest=digest_bytes(data),
            blob_uri=ref.uri,
            size=len(data),
            pricing=Pricing("free", 0, 0),
            restrictions=Restrictions(**restrictions),
            machine_ids=(),
            created_at=0,
            active=True,
        )
        self.contents[offer.offer_id] = Content(offer, dek, owner)
        return self.contents[offer.offer_id]

    @property
    def order(self) -> Order:
        by_kind = {
            kind: [c.offer.offer_id for c in self.contents.values() if c.offer.kind == kind]
            for kind in ("model", "dataset", "engine")
        }
        return Order(
            order_id=self.order_id,
            owner=self.developer.address,
            kind="finetune",
            model_offer=by_kind["model"][0],
            dataset_offers=tuple(by_kind["dataset"]),
            engine_offer=by_kind["engine"][0],
            compute_offer=None,
            params={"marker": str(self.marker), **self.params},
            lease_hours=1,
            replicas=1,
            deposit=0,
            escrow=0,
            state="ready",
            machines=(self.machine_id,),
            created_at=0,
            started_at=None,
            ended_at=None,
            usage_seconds=0,
            report_digest=None,
            failure_reason=None,
        )

    @property
    def engine_digest(self) -> str:
        """The engine every grant of this order is bound to."""
        return str(next(c.offer.content_digest for c in self.contents.values() if c.offer.kind == "engine"))

    @property
    def offers(self) -> dict[str, Offer]:
        return {offer_id: c.offer for offer_id, c in self.contents.items()}

    @property
    def owner_account(self) -> Account:
        public = self.developer.public
        return Account(self.developer.address, "dev", public.signing_key, public.sealing_key, 0, 0, 0)

    def grant(
        self,
        offer_id: str,
        *,
        order_id: str | None = None,
        machine_id: str | None = None,
        key: bytes | None = None,
        engine_digest: str | None = None,
    ) -> KeyGrant:
        content = self.contents[offer_id]
        sealed = seal_key_grant(
            content.dek,
            key or self.loader_identity.public.sealing_key,
            order_id=order_id or self.order_id,
            content_digest=str(content.offer.content_digest),
            machine_id=machine_id or self.machine_id,
            engine_digest=engine_digest or self.engine_digest,
        )
        return KeyGrant(self.order_id, offer_id, self.machine_id, content.owner.address, sealed, 0)

    def grants(self) -> list[KeyGrant]:
        return [self.grant(offer_id) for offer_id in self.contents]

    def loader(self, identity: Identity | None = None, machine_id: str | None = None) -> TrustedLoader:
        return TrustedLoader(
            identity=identity or self.loader_identity,
            machine_id=machine_id or self.machine_id,
            tcb_id=digest_bytes(b"tcb"),
            store=self.store,
            workspace_root=self.root / "workspaces",
            poll_interval=0.05,
        )

    @property
    def workspace(self) -> Path:
        return self.root / "workspaces" / self.order_id


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    s = Scenario(tmp_path, LocalBlobStore(tmp_path / "blobs"), Identity.generate(), _id("mc-", 7), Identity.generate())
    s.publish(1, "model", "base.gguf", MODEL_TEXT)
    s.publish(2, "dataset", "clinic.jsonl", DATASET_TEXT)
    s.publish(3, "dataset", "lab.jsonl", DATASET_TEXT + b"more\n")
    s.publish(4, "engine", "toy-engine", pack(write_engine(tmp_path / "engine-src")))
    return s
