"""The SDK's publish and download on both blob stores: plaintext never stored, owner-only, all-or-nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.ledger.conftest import FakeClock
from tests.storage.backends import Backend, LocalBackend, S3Backend

from cloister.client.sdk import Client
from cloister.errors import ConfigError, IntegrityError, NotAuthorized, RecordNotFound
from cloister.ledger.embedded import EmbeddedLedger
from cloister.ledger.genesis import Genesis
from cloister.ledger.records import Pricing, Restrictions

FREE = Pricing("free", 0, 0)
ANYWHERE = Restrictions((), (), (), None)


@pytest.fixture(params=["local", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "local":
        return LocalBackend(tmp_path / "blobs")
    return S3Backend(request.getfixturevalue("s3_server"))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[EmbeddedLedger]:
    with EmbeddedLedger.create(tmp_path / "ledger.db", Genesis.devnet(1_800_000_000), clock=FakeClock()) as led:
        yield led


def make_client(tmp_path: Path, name: str, ledger: EmbeddedLedger, backend: Backend) -> Client:
    client = Client(home=tmp_path / name, ledger=ledger, store=backend.store)
    client.create_account(name)
    return client


def test_publish_then_download_round_trip(tmp_path: Path, ledger: EmbeddedLedger, backend: Backend) -> None:
    alice = make_client(tmp_path, "alice", ledger, backend)
    plaintext = os.urandom(2 * (1 << 20) + 5)
    source = tmp_path / "model.bin"
    source.write_bytes(plaintext)

    offer = alice.publish("model", source, pricing=Pricing("per_hour", 2_000_000, 0), restrictions=ANYWHERE)
    assert offer.owner == alice.address and offer.size == len(plaintext) and offer.blob_uri
    assert alice.keystore.has_content_key(str(offer.content_digest))
    with backend.store.open(offer.blob_uri) as stored:
        ciphertext = stored.read()
    assert plaintext[:4096] not in ciphertext, "only ciphertext reaches the store"

    again = alice.publish("model", source, pricing=FREE, restrictions=ANYWHERE, name="again")
    assert again.content_digest == offer.content_digest, "one digest, one key"

    dest = tmp_path / "copy.bin"
    alice.download(str(offer.content_digest), dest)
    assert dest.read_bytes() == plaintext


def test_only_the_owner_can_download(tmp_path: Path, ledger: EmbeddedLedger, backend: Backend) -> None:
    alice = make_client(tmp_path, "alice", ledger, backend)
    bob = make_client(tmp_path, "bob", ledger, backend)
    source = tmp_path / "data.jsonl"
    source.write_text('{"messages": []}\n')
    offer = alice.publish("dataset", source, pricing=FREE, restrictions=ANYWHERE)
    with pytest.raises(NotAuthorized, match="only its owner"):
        bob.download(str(offer.content_digest), tmp_path / "stolen")
    assert not (tmp_path / "stolen").exists()
    with pytest.raises(RecordNotFound):
        alice.download("sha256:" + "0" * 64, tmp_path / "nothing")


def test_tampered_blob_yields_no_plaintext(tmp_path: Path, ledger: EmbeddedLedger, backend: Backend) -> None:
    alice = make_client(tmp_path, "alice", ledger, backend)
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(300_000))
    offer = alice.publish("model", source, pricing=FREE, restrictions=ANYWHERE)
    assert offer.blob_uri
    with backend.store.open(offer.blob_uri) as stored:
        ciphertext = bytearray(stored.read())
    ciphertext[len(ciphertext) // 2] ^= 0x01
    backend.tamper(offer.blob_uri, bytes(ciphertext))
    dest = tmp_path / "copy.bin"
    with pytest.raises(IntegrityError):
        alice.download(str(offer.content_digest), dest)
    assert not dest.exists()
    assert not list((alice.keystore.home / "tmp").iterdir()), "scratch files are cleaned up"


def test_publish_refuses_what_it_cannot_offer(tmp_path: Path, ledger: EmbeddedLedger, backend: Backend) -> None:
    alice = make_client(tmp_path, "alice", ledger, backend)
    with pytest.raises(ConfigError, match="not a file"):
        alice.publish("model", tmp_path, pricing=FREE, restrictions=ANYWHERE)
    with pytest.raises(ConfigError, match="cannot publish 'compute'"):
        alice.publish("compute", tmp_path / "x", pricing=FREE, restrictions=ANYWHERE)
