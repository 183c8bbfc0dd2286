"""HPKE base mode: RFC 9180 appendix A.1 vectors, interop with cryptography's HPKE, and every failure."""

from __future__ import annotations

import pytest
from cryptography.hazmat.bindings._rust import openssl as rust_openssl
from cryptography.hazmat.primitives import hpke as their_hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloister.crypto.hpke import (
    ENC_SIZE,
    Aead,
    _encap,
    _key_schedule_context,
    _setup_receiver,
    _setup_sender,
    open_sealed,
    seal,
)
from cloister.errors import IntegrityError, MalformedInput

# RFC 9180 appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, base mode.
A1 = {
    "info": "4f6465206f6e2061204772656369616e2055726e",
    "skEm": "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736",
    "pkEm": "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    "skRm": "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    "pkRm": "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d",
    "shared_secret": "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc",
    "key_schedule_context": "00725611c9d98c07c03f60095cd32d400d8347d45ed67097bbad50fc56da742d07"
    "cb6cffde367bb0565ba28bb02c90744a20f5ef37f30523526106f637abb05449",
    "key": "4531685d41d65f03dc48f6b8302c05b0",
    "base_nonce": "56d890e5accaaf011cff4b7d",
    "exporter_secret": "45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8",
    "pt": "4265617574792069732074727574682c20747275746820626561757479",
}
# (sequence number, aad, ciphertext) from A.1.1.1; 255 -> 256 checks the nonce XOR carries into the next byte.
A1_ENCRYPTIONS = [
    (
        0,
        "436f756e742d30",
        "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a",
    ),
    (
        1,
        "436f756e742d31",
        "af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab251c03d0c22a56b8ca42c2063b84",
    ),
    (
        2,
        "436f756e742d32",
        "498dfcabd92e8acedc281e85af1cb4e3e31c7dc394a1ca20e173cb72516491588d96a19ad4a683518973dcc180",
    ),
    (
        4,
        "436f756e742d34",
        "583bd32bc67a5994bb8ceaca813d369bca7b2a42408cddef5e22f880b631215a09fc0012bc69fccaa251c0246d",
    ),
    (
        255,
        "436f756e742d323535",
        "7175db9717964058640a3a11fb9007941a5d1757fda1a6935c805c21af32505bf106deefec4a49ac38d71c9e0a",
    ),
    (
        256,
        "436f756e742d323536",
        "957f9800542b0b8891badb026d79cc54597cb2d225b54c00c5238c25d05c30e3fbeda97d2e0e1aba483a2df9f2",
    ),
]
INFO = b"cloister/test/v1"
THEIR_SUITE = their_hpke.Suite(their_hpke.KEM.X25519, their_hpke.KDF.HKDF_SHA256, their_hpke.AEAD.AES_256_GCM)


def h(name: str) -> bytes:
    return bytes.fromhex(A1[name])


def _key_pair() -> tuple[X25519PrivateKey, bytes]:
    key = X25519PrivateKey.generate()
    return key, key.public_key().public_bytes_raw()


# --- RFC 9180 appendix A.1 ----------------------------------------------------------------------------------


def test_a1_encap_gives_the_published_enc_and_shared_secret() -> None:
    shared_secret, enc = _encap(h("pkRm"), X25519PrivateKey.from_private_bytes(h("skEm")))
    assert enc.hex() == A1["pkEm"]
    assert shared_secret.hex() == A1["shared_secret"]


def test_a1_key_schedule_matches() -> None:
    assert _key_schedule_context(Aead.AES_128_GCM, h("info")).hex() == A1["key_schedule_context"]
    sender, _ = _setup_sender(Aead.AES_128_GCM, h("pkRm"), h("info"), X25519PrivateKey.from_private_bytes(h("skEm")))
    receiver = _setup_receiver(Aead.AES_128_GCM, h("pkEm"), X25519PrivateKey.from_private_bytes(h("skRm")), h("info"))
    for context in (sender, receiver):
        assert context.key.hex() == A1["key"]
        assert context.base_nonce.hex() == A1["base_nonce"]
        assert context.exporter_secret.hex() == A1["exporter_secret"]


def test_a1_sequence_of_encryptions_matches_and_opens() -> None:
    sender, enc = _setup_sender(Aead.AES_128_GCM, h("pkRm"), h("info"), X25519PrivateKey.from_private_bytes(h("skEm")))
    receiver = _setup_receiver(Aead.AES_128_GCM, enc, X25519PrivateKey.from_private_bytes(h("skRm")), h("info"))
    expected = {seq: (bytes.fromhex(aad), ct) for seq, aad, ct in A1_ENCRYPTIONS}
    for seq in range(max(expected) + 1):
        aad = expected[seq][0] if seq in expected else f"Count-{seq}".encode()
        ciphertext = sender.seal(aad, h("pt"))
        if seq in expected:
            assert ciphertext.hex() == expected[seq][1], f"sequence {seq}"
        assert receiver.open(aad, ciphertext) == h("pt")


def test_a1_single_shot_open_with_the_published_enc() -> None:
    first_seq, aad, ciphertext = A1_ENCRYPTIONS[0]
    assert first_seq == 0
    sealed = h("pkEm") + bytes.fromhex(ciphertext)
    recipient = X25519PrivateKey.from_private_bytes(h("skRm"))
    opened = open_sealed(recipient, sealed, info=h("info"), aad=bytes.fromhex(aad), aead=Aead.AES_128_GCM)
    assert opened == h("pt")


# --- interop with cryptography's own HPKE -------------------------------------------------------------------


@pytest.mark.parametrize("plaintext", [b"", b"x", b"a DEK would be 32 bytes long...!", bytes(range(256)) * 40])
def test_theirs_opens_ours(plaintext: bytes) -> None:
    key, public = _key_pair()
    assert THEIR_SUITE.decrypt(seal(public, plaintext, info=INFO), key, info=INFO) == plaintext


@pytest.mark.parametrize("plaintext", [b"", b"x", bytes(range(256)) * 40])
def test_ours_opens_theirs(plaintext: bytes) -> None:
    key, _ = _key_pair()
    sealed = THEIR_SUITE.encrypt(plaintext, key.public_key(), info=INFO)
    assert open_sealed(key, sealed, info=INFO) == plaintext


def test_interop_with_aad_both_ways() -> None:
    their_seal = getattr(rust_openssl.hpke, "_encrypt_with_aad", None)
    their_open = getattr(rust_openssl.hpke, "_decrypt_with_aad", None)
    if their_seal is None or their_open is None:
        pytest.skip("this cryptography release has no HPKE-with-AAD hook")
    key, public = _key_pair()
    ours = seal(public, b"bound", info=INFO, aad=b"order-7")
    assert their_open(THEIR_SUITE, ours, key, info=INFO, aad=b"order-7") == b"bound"
    theirs = their_seal(THEIR_SUITE, b"bound", key.public_key(), info=INFO, aad=b"order-7")
    assert open_sealed(key, theirs, info=INFO, aad=b"order-7") == b"bound"
    with pytest.raises(IntegrityError):
        open_sealed(key, theirs, info=INFO, aad=b"order-8")


# --- the safe recipe and its failures -----------------------------------------------------------------------


def test_round_trip_and_fresh_ephemeral_each_time() -> None:
    key, public = _key_pair()
    first = seal(public, b"secret", info=INFO, aad=b"a")
    second = seal(public, b"secret", info=INFO, aad=b"a")
    assert first[:ENC_SIZE] != second[:ENC_SIZE]
    assert len(first) == ENC_SIZE + len(b"secret") + 16
    assert open_sealed(key, first, info=INFO, aad=b"a") == b"secret"
    assert open_sealed(key, second, info=INFO, aad=b"a") == b"secret"


def test_aes_128_round_trip_does_not_open_as_aes_256() -> None:
    key, public = _key_pair()
    sealed = seal(public, b"secret", info=INFO, aead=Aead.AES_128_GCM)
    assert open_sealed(key, sealed, info=INFO, aead=Aead.AES_128_GCM) == b"secret"
    with pytest.raises(IntegrityError):
        open_sealed(key, sealed, info=INFO)


def test_wrong_key_fails() -> None:
    _, public = _key_pair()
    other, _ = _key_pair()
    with pytest.raises(IntegrityError, match="another key"):
        open_sealed(other, seal(public, b"secret", info=INFO), info=INFO)


def test_wrong_info_fails() -> None:
    key, public = _key_pair()
    with pytest.raises(IntegrityError):
        open_sealed(key, seal(public, b"secret", info=INFO), info=b"cloister/other/v1")


def test_wrong_aad_fails() -> None:
    key, public = _key_pair()
    sealed = seal(public, b"secret", info=INFO, aad=b"order-1")
    with pytest.raises(IntegrityError):
        open_sealed(key, sealed, info=INFO, aad=b"order-2")
    with pytest.raises(IntegrityError):
        open_sealed(key, sealed, info=INFO)


@pytest.mark.parametrize("position", [0, 31, 32, 40, -1])
def test_any_flipped_bit_fails(position: int) -> None:
    key, public = _key_pair()
    sealed = bytearray(seal(public, b"a sealed data key", info=INFO))
    sealed[position] ^= 0x01
    with pytest.raises(IntegrityError):
        open_sealed(key, bytes(sealed), info=INFO)


def test_replayed_enc_with_other_ciphertext_fails() -> None:
    key, public = _key_pair()
    first = seal(public, b"first", info=INFO)
    second = seal(public, b"other", info=INFO)
    with pytest.raises(IntegrityError):
        open_sealed(key, first[:ENC_SIZE] + second[ENC_SIZE:], info=INFO)


@pytest.mark.parametrize("length", [0, 1, ENC_SIZE, ENC_SIZE + 15])
def test_too_short_is_malformed(length: int) -> None:
    key, public = _key_pair()
    with pytest.raises(MalformedInput, match="truncated"):
        open_sealed(key, seal(public, b"", info=INFO)[:length], info=INFO)


def test_truncated_ciphertext_fails_authentication() -> None:
    key, public = _key_pair()
    sealed = seal(public, b"a longer secret message", info=INFO)
    with pytest.raises(IntegrityError):
        open_sealed(key, sealed[:-1], info=INFO)


def test_low_order_points_are_refused() -> None:
    key, _ = _key_pair()
    with pytest.raises(MalformedInput, match="low-order"):
        seal(bytes(32), b"secret", info=INFO)
    with pytest.raises(IntegrityError, match="encapsulated key"):
        open_sealed(key, bytes(32) + bytes(16), info=INFO)


@pytest.mark.parametrize("public", [b"", bytes(31), bytes(33)])
def test_recipient_key_of_wrong_length_is_malformed(public: bytes) -> None:
    with pytest.raises(MalformedInput, match="32 bytes"):
        seal(public, b"secret", info=INFO)
