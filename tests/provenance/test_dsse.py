"""DSSE v1: the spec's published Ed25519 vectors, round trips, and every way to tamper with an envelope."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from cloister.attest.checks import Checklist
from cloister.crypto.identity import Identity, dsse_pae, verify_dsse_signature, verify_signature
from cloister.errors import CloisterError, InvalidSignature, MalformedInput
from cloister.provenance.dsse import MAX_ENVELOPE, MAX_SIGNATURES, Envelope, Signature, sign_envelope, verify_envelope

INTOTO = "application/vnd.in-toto+json"

# secure-systems-lab/dsse testvectors/vectors.json: keys A and B are RFC 8032 section 7.1 TEST 1 and TEST 2.
SEED_A = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
SEED_B = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"
STATEMENT_B64 = "eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ=="
SIG_A = "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
SIG_B = "c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw=="
PAE_STATEMENT = (
    "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f74797065223a2268"
    "747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d"
)
# (id, payloadType, payload, sig by A, PAE hex): the vectors a single-key verifier must accept.
ACCEPTED = [
    ("single-signature", INTOTO, STATEMENT_B64, SIG_A, PAE_STATEMENT),
    (
        "url-safe-base64",
        INTOTO,
        "-_-_Pj8=",
        "P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw==",
        "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203520fbffbf3e3f",
    ),
    (
        "non-ascii-payload-type",
        "application/vnd.exämple+json",
        STATEMENT_B64,
        "xmSk/ug66ysT7ayhkCIjhAq42zgZXSsEWuzUaNL7w2eGAdF/NU6/fRXPtmfN+5DNSAs5/i2lUnHjbbjPsu0tAw==",
        "445353457631203239206170706c69636174696f6e2f766e642e6578c3a46d706c652b6a736f6e203433207b225f74797065223a"
        "2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d",
    ),
    (
        "empty-payload",
        INTOTO,
        "",
        "gSggCAaTLTYyRH6FIDBem6meyIynsYy8RTHVzwx9tnTb7Bg/1jMWnuVgI/gffqmbsC2VX5/jHfkkDqsj7CDbDg==",
        "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020",
    ),
]


def vector_key(seed: str) -> Identity:
    return Identity.from_private_bytes(bytes.fromhex(seed), bytes(32))


def as_json(envelope: Envelope) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(envelope.to_bytes())
    return data


def check_of(error: pytest.ExceptionInfo[CloisterError]) -> str:
    return str(error.value.details["check"])


@pytest.fixture
def loader() -> Identity:
    return Identity.generate()


@pytest.fixture
def signed(loader: Identity) -> Envelope:
    return sign_envelope(INTOTO, b'{"hello":"world"}', loader)


# --- the spec's vectors --------------------------------------------------------------------------------------


def test_vector_keys_are_rfc8032() -> None:
    assert vector_key(SEED_A).public.signing_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


@pytest.mark.parametrize(("name", "payload_type", "payload", "sig", "pae"), ACCEPTED, ids=[v[0] for v in ACCEPTED])
def test_spec_vectors_are_accepted(name: str, payload_type: str, payload: str, sig: str, pae: str) -> None:
    key_a = vector_key(SEED_A)
    envelope = Envelope.from_json({"payload": payload, "payloadType": payload_type, "signatures": [{"sig": sig}]})
    assert dsse_pae(envelope.payload_type, envelope.payload).hex() == pae
    assert verify_envelope(envelope, payload_type=payload_type, public_keys=[key_a.public.signing_key]) == (
        envelope.payload
    )
    # Ed25519 is deterministic: our signer reproduces the published signature bit for bit.
    assert key_a.sign_dsse(payload_type, envelope.payload) == envelope.signatures[0].sig


def test_spec_vector_payload_type_swapped_is_rejected() -> None:
    envelope = Envelope.from_json(
        {"payload": STATEMENT_B64, "payloadType": "application/vnd.example.other+json", "signatures": [{"sig": SIG_A}]}
    )
    with pytest.raises(InvalidSignature) as error:
        verify_envelope(
            envelope,
            payload_type="application/vnd.example.other+json",
            public_keys=[vector_key(SEED_A).public.signing_key],
        )
    assert check_of(error) == "signature"


def test_spec_vector_empty_payload_type_is_rejected() -> None:
    with pytest.raises(MalformedInput, match="payloadType"):
        Envelope.from_json({"payload": STATEMENT_B64, "payloadType": "", "signatures": [{"sig": SIG_A}]})


def test_spec_vector_two_signers_each_verify_alone() -> None:
    envelope = Envelope.from_json(
        {
            "payload": STATEMENT_B64,
            "payloadType": INTOTO,
            "signatures": [{"sig": SIG_A, "keyid": "A"}, {"sig": SIG_B, "keyid": "B"}],
        }
    )
    for seed in (SEED_A, SEED_B):
        verify_envelope(envelope, payload_type=INTOTO, public_keys=[vector_key(seed).public.signing_key])
    with pytest.raises(InvalidSignature):
        verify_envelope(envelope, payload_type=INTOTO, public_keys=[Identity.generate().public.signing_key])


# --- round trip ----------------------------------------------------------------------------------------------


def test_round_trip_and_keyid(loader: Identity, signed: Envelope) -> None:
    wire = signed.to_bytes()
    assert set(json.loads(wire)) == {"payload", "payloadType", "signatures"}
    parsed = Envelope.parse(wire)
    assert parsed == signed
    assert parsed.signatures[0].keyid == loader.address
    checklist = Checklist()
    payload = verify_envelope(parsed, payload_type=INTOTO, public_keys=[loader.public.signing_key], checklist=checklist)
    assert payload == b'{"hello":"world"}'
    assert [(c.name, c.passed) for c in checklist.items] == [("signature", True), ("payload type", True)]


def test_url_safe_and_standard_spellings_parse_to_the_same_envelope(signed: Envelope) -> None:
    data = as_json(signed)
    data["signatures"][0]["sig"] = data["signatures"][0]["sig"].replace("+", "-").replace("/", "_")
    assert Envelope.from_json(data) == signed


# --- tampering -----------------------------------------------------------------------------------------------


def test_tampered_payload_type_or_signature_fail_the_signature_check(loader: Identity, signed: Envelope) -> None:
    keys = [loader.public.signing_key]
    sig = bytearray(signed.signatures[0].sig)
    sig[10] ^= 1
    tampered = [
        Envelope(signed.payload_type, b'{"hello":"World"}', signed.signatures),
        Envelope("application/vnd.in-toto+jsom", signed.payload, signed.signatures),
        Envelope(signed.payload_type, signed.payload, (Signature(bytes(sig), loader.address),)),
        Envelope(signed.payload_type, signed.payload, (Signature(signed.signatures[0].sig[:63], loader.address),)),
    ]
    for envelope in tampered:
        checklist = Checklist()
        with pytest.raises(InvalidSignature) as error:
            verify_envelope(envelope, payload_type=envelope.payload_type, public_keys=keys, checklist=checklist)
        assert check_of(error) == "signature"
        assert [(c.name, c.passed) for c in checklist.items] == [("signature", False)]


def test_a_signature_by_another_key_fails_even_under_the_loaders_keyid(loader: Identity) -> None:
    forger = Identity.generate()
    forged = sign_envelope(INTOTO, b"{}", forger)
    relabelled = Envelope(INTOTO, b"{}", (Signature(forged.signatures[0].sig, loader.address),))
    for envelope in (forged, relabelled):
        with pytest.raises(InvalidSignature, match="altered or signed by someone else"):
            verify_envelope(envelope, payload_type=INTOTO, public_keys=[loader.public.signing_key])


def test_keyid_is_only_a_hint(loader: Identity, signed: Envelope) -> None:
    """DSSE: keyids are unauthenticated, so a genuine signature under another keyid still verifies."""
    swapped = Envelope(signed.payload_type, signed.payload, (Signature(signed.signatures[0].sig, "cl-other"),))
    assert verify_envelope(swapped, payload_type=INTOTO, public_keys=[loader.public.signing_key]) == signed.payload


def test_unexpected_payload_type_fails_its_own_check(loader: Identity) -> None:
    envelope = sign_envelope("application/json", b"{}", loader)
    checklist = Checklist()
    with pytest.raises(MalformedInput) as error:
        verify_envelope(envelope, payload_type=INTOTO, public_keys=[loader.public.signing_key], checklist=checklist)
    assert check_of(error) == "payload type"
    assert [(c.name, c.passed) for c in checklist.items] == [("signature", True), ("payload type", False)]


def _mutations(signed: Envelope) -> dict[str, tuple[Any, str]]:
    """Name → (tampered envelope JSON, what the refusal must mention)."""
    good = as_json(signed)
    sig = good["signatures"][0]
    return {
        "extra top-level field": ({**good, "extra": 1}, "unknown extra"),
        "missing payload": ({k: v for k, v in good.items() if k != "payload"}, "missing payload"),
        "missing payloadType": ({k: v for k, v in good.items() if k != "payloadType"}, "missing payloadType"),
        "missing signatures": ({k: v for k, v in good.items() if k != "signatures"}, "missing signatures"),
        "no signatures": ({**good, "signatures": []}, "1 to 16"),
        "signatures not a list": ({**good, "signatures": sig}, "must be a list"),
        "extra signature field": ({**good, "signatures": [{**sig, "alg": "ed25519"}]}, "unknown alg"),
        "signature without sig": ({**good, "signatures": [{"keyid": sig["keyid"]}]}, "missing sig"),
        "keyid not a string": ({**good, "signatures": [{**sig, "keyid": 7}]}, "keyid must be a string"),
        "duplicate signatures": ({**good, "signatures": [sig, sig]}, "same signature twice"),
        "too many signatures": ({**good, "signatures": [sig] * (MAX_SIGNATURES + 1)}, "at most 16"),
        "payload not base64": ({**good, "payload": "not base64!"}, "not valid padded base64"),
        "payload missing padding": ({**good, "payload": good["payload"].rstrip("=")}, "not valid padded base64"),
        "payload non-canonical base64": ({**good, "payload": "aGp="}, "not canonical base64"),
        "mixed base64 alphabets": ({**good, "payload": "+_+_"}, "mixes"),
        "payload not a string": ({**good, "payload": 5}, "must be a base64 string"),
        "sig not base64": ({**good, "signatures": [{**sig, "sig": "%%%%"}]}, "sig is not valid"),
        "empty sig": ({**good, "signatures": [{**sig, "sig": ""}]}, "1 to 512 bytes"),
        "payloadType not a string": ({**good, "payloadType": ["x"]}, "payloadType must be"),
        "payloadType with control characters": ({**good, "payloadType": "a\nb"}, "printable"),
        "not an object": ([good], "must be a JSON object"),
    }


@pytest.mark.parametrize("name", list(_mutations(sign_envelope(INTOTO, b"{}", Identity.generate()))))
def test_malformed_envelopes_are_refused(name: str, signed: Envelope) -> None:
    data, fragment = _mutations(signed)[name]
    with pytest.raises(MalformedInput, match=fragment):
        Envelope.from_json(data)


def test_malformed_envelope_text_is_refused(signed: Envelope) -> None:
    wire = signed.to_bytes()
    for cut in range(0, len(wire), 9):
        with pytest.raises(MalformedInput):
            Envelope.parse(wire[:cut])
    bad_texts = [
        b"\xff\xfe not utf-8",
        b"[" * 100_000,
        json.dumps({"a": {"b": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}).encode(),
        b" " * (MAX_ENVELOPE + 1),
        wire.replace(b'"payloadType"', b'"payloadType":"text/plain","payloadType"'),
    ]
    for text in bad_texts:
        with pytest.raises(MalformedInput):
            Envelope.parse(text)


def test_building_an_invalid_envelope_is_refused(loader: Identity, signed: Envelope) -> None:
    with pytest.raises(MalformedInput):
        Envelope(INTOTO, b"{}", ())
    with pytest.raises(MalformedInput):
        Envelope(INTOTO, b"{}", (signed.signatures[0], signed.signatures[0]))
    with pytest.raises(MalformedInput):
        Signature(b"")


# --- the DSSE signature is its own kind -----------------------------------------------------------------------


def test_dsse_and_domain_signatures_never_stand_in_for_each_other(loader: Identity) -> None:
    key = loader.public.signing_key
    pae = dsse_pae(INTOTO, b"{}")
    with pytest.raises(InvalidSignature):
        verify_dsse_signature(key, INTOTO, b"{}", loader.sign("cloister/order-report/v1", pae))
    with pytest.raises(InvalidSignature):
        verify_signature(key, "cloister/order-report/v1", pae, loader.sign_dsse(INTOTO, b"{}"))
    with pytest.raises(MalformedInput, match="DSSEv1"):
        loader.sign("DSSEv1 28 application/vnd.in-toto+json 2", b"{}")


def test_pae_counts_utf8_bytes_and_refuses_unencodable_types() -> None:
    assert dsse_pae("é", b"ab") == "DSSEv1 2 é 2 ab".encode()
    with pytest.raises(MalformedInput):
        dsse_pae("\ud800", b"")


def test_non_ed25519_sized_signatures_do_not_verify(loader: Identity) -> None:
    envelope = Envelope(INTOTO, b"{}", (Signature(base64.b64decode(SIG_A) * 2),))
    with pytest.raises(InvalidSignature):
        verify_envelope(envelope, payload_type=INTOTO, public_keys=[loader.public.signing_key])
