"""A fine-tuning job as the loader would describe it, for the provenance tests."""

from __future__ import annotations

from decimal import Decimal

from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.provenance.fields import ContentRef
from cloister.provenance.report import Checkpoint, OrderReport, Output, Usage, Wipe
from cloister.provenance.statement import FinetunePredicate, Metrics, Subject

ORDER = "or-0123456789abcdef"
MACHINE = "mc-fedcba9876543210"
TCB = digest_bytes(b"tcb evidence")
MODEL = ContentRef("of-1111111111111111", digest_bytes(b"SmolLM2-135M"))
CLINIC = ContentRef("of-2222222222222222", digest_bytes(b"clinic facts"))
LAB = ContentRef("of-3333333333333333", digest_bytes(b"lab facts"))
ENGINE = ContentRef("of-4444444444444444", digest_bytes(b"lora_finetune bundle"))
ADAPTER = Subject("adapter", digest_bytes(b"adapter safetensors"))
STARTED, ENDED = 1_750_000_000, 1_750_000_600


def predicate(loader: Identity, **changes: object) -> FinetunePredicate:
    fields: dict[str, object] = {
        "order_id": ORDER,
        "machine_id": MACHINE,
        "tcb_id": TCB,
        "loader_key": loader.public.signing_key,
        "base_model": MODEL,
        "datasets": (CLINIC, LAB),
        "engine": ENGINE,
        "hyperparameters": {"lora_rank": 8, "learning_rate": "2e-4", "steps": 60, "seed": 7},
        "metrics": Metrics(Decimal("0.4123"), "heldout_exact_match", Decimal("0.0"), Decimal("0.75")),
        "started_at": STARTED,
        "ended_at": ENDED,
    }
    fields.update(changes)
    return FinetunePredicate(**fields)  # type: ignore[arg-type]


def report(**changes: object) -> OrderReport:
    fields: dict[str, object] = {
        "order_id": ORDER,
        "machine_id": MACHINE,
        "tcb_id": TCB,
        "engine": ENGINE,
        "inputs": (MODEL, CLINIC, LAB),
        "outputs": (
            Output("adapter", ADAPTER.digest, "file:///blobs/ab/abcdef"),
            Output("loss_curve", digest_bytes(b"loss curve"), "file:///blobs/cd/cdef01"),
        ),
        "started_at": STARTED,
        "ended_at": ENDED,
        "usage": Usage(seconds=600, steps=60, tokens=48_000),
        "checkpoints": (
            Checkpoint(20, digest_bytes(b"ckpt 20"), "file:///blobs/c/20", STARTED + 200),
            Checkpoint(40, digest_bytes(b"ckpt 40"), "file:///blobs/c/40", STARTED + 400),
        ),
        "wipe": Wipe(("inputs", "outputs", "checkpoints", "tmp"), files=17, size=270_000_000, at=ENDED + 2),
    }
    fields.update(changes)
    return OrderReport(**fields)  # type: ignore[arg-type]
