"""The secrets vault: shared only with attested loaders of the same engine, sealed at rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloister.crypto.digest import digest_bytes
from cloister.crypto.identity import Identity
from cloister.errors import VaultError
from cloister.ledger.records import Machine, MachineSpecs
from cloister.runtime.vault import JoinRequest, Vault

ENGINE = digest_bytes(b"engine")
OTHER_ENGINE = digest_bytes(b"other engine")
PEER_ID = "mc-00000000000000cc"


def _machine(identity: Identity, *, verdict: str = "trusted", machine_id: str = PEER_ID) -> Machine:
    return Machine(
        machine_id=machine_id,
        provider=identity.address,
        platform="sim",
        region="eu",
        specs=MachineSpecs(2, 4, (), 10),
        tcb_evidence=b"{}",
        loader_signing_key=identity.public.signing_key,
        loader_sealing_key=identity.public.sealing_key,
        registered_at=0,
        last_heartbeat=0,
        active=True,
        attestation_digest=digest_bytes(b"result"),
        attestation_verdict=verdict,  # type: ignore[arg-type]
    )


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    made = Vault.create(ENGINE, tmp_path / "vault.bin")
    made.put("api-token", b"s3cret")
    return made


def test_put_get_delete_persist_encrypted(vault: Vault) -> None:
    assert b"s3cret" not in vault.path.read_bytes()
    again = Vault.open(vault.key, vault.path)
    assert again.get("api-token") == b"s3cret"
    again.delete("api-token")
    assert Vault.open(vault.key, vault.path).names() == []
    with pytest.raises(VaultError):
        again.get("api-token")
    with pytest.raises(VaultError):
        again.delete("api-token")


@pytest.mark.parametrize("cut", [1, 20])
def test_tampered_or_truncated_file_is_refused(vault: Vault, cut: int) -> None:
    data = bytearray(vault.path.read_bytes())
    data[-cut] ^= 1
    vault.path.write_bytes(bytes(data))
    with pytest.raises(VaultError):
        Vault.open(vault.key, vault.path)
    vault.path.write_bytes(bytes(data[:-cut]))
    with pytest.raises(VaultError):
        Vault.open(vault.key, vault.path)


def test_another_vaults_file_is_refused(vault: Vault, tmp_path: Path) -> None:
    other = Vault.create(ENGINE, tmp_path / "other.bin")
    with pytest.raises(VaultError):
        Vault.open(vault.key, other.path)


def test_share_with_a_loader_of_the_same_engine(vault: Vault) -> None:
    peer = Identity.generate()
    sealed = vault.share_with(JoinRequest.make(peer, PEER_ID, ENGINE), _machine(peer))
    key = Vault.join(sealed, peer, machine_id=PEER_ID, vault_id=vault.key.vault_id, engine_digest=ENGINE)
    assert Vault.open(key, vault.path).get("api-token") == b"s3cret"
    for who, machine in ((Identity.generate(), PEER_ID), (peer, "mc-00000000000000dd")):
        with pytest.raises(VaultError):
            Vault.join(sealed, who, machine_id=machine, vault_id=vault.key.vault_id, engine_digest=ENGINE)
    with pytest.raises(VaultError):
        Vault.join(sealed, peer, machine_id=PEER_ID, vault_id=vault.key.vault_id, engine_digest=OTHER_ENGINE)


def test_sharing_refused_for_another_engine(vault: Vault) -> None:
    peer = Identity.generate()
    with pytest.raises(VaultError, match="only loaders of the same engine"):
        vault.share_with(JoinRequest.make(peer, PEER_ID, OTHER_ENGINE), _machine(peer))


def test_sharing_refused_for_a_forged_request_or_unattested_machine(vault: Vault) -> None:
    peer, impostor = Identity.generate(), Identity.generate()
    with pytest.raises(VaultError, match="not signed"):
        vault.share_with(JoinRequest.make(impostor, PEER_ID, ENGINE), _machine(peer))
    with pytest.raises(VaultError, match="names"):
        vault.share_with(JoinRequest.make(peer, PEER_ID, ENGINE), _machine(peer, machine_id="mc-00000000000000ee"))
    simulated = _machine(peer, verdict="simulated")
    with pytest.raises(VaultError, match="simulated"):
        vault.share_with(JoinRequest.make(peer, PEER_ID, ENGINE), simulated)
    assert vault.share_with(JoinRequest.make(peer, PEER_ID, ENGINE), simulated, allow_simulated=True)
