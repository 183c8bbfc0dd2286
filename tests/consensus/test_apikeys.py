"""API keys: made and checked with real account keys; every altered key is refused with a 401."""

from __future__ import annotations

import base64

import pytest
from tests.consensus.samples import GATEWAY, identity

from cloister.consensus.apikeys import PREFIX, make_api_key, parse_api_key
from cloister.crypto.canonical import canonical_json
from cloister.errors import ApiKeyRejected

USER = identity("user")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_round_trip_and_verify() -> None:
    text = make_api_key(USER, GATEWAY.address, "cross: 0.10 ,2", issued_at=1234)
    key = parse_api_key(text)
    assert (key.account, key.gateway, key.consensus, key.issued_at) == (
        USER.address,
        GATEWAY.address,
        "cross:0.1,2",
        1234,
    )
    key.verify(USER.public.signing_key)
    plain = parse_api_key(make_api_key(USER, GATEWAY.address))
    assert plain.consensus is None and plain.issued_at > 1_600_000_000


def test_another_accounts_key_is_refused() -> None:
    key = parse_api_key(make_api_key(USER, GATEWAY.address, issued_at=1))
    with pytest.raises(ApiKeyRejected) as caught:
        key.verify(GATEWAY.public.signing_key)
    assert caught.value.http_status == 401


def test_a_key_signed_by_someone_else_for_this_account_is_refused() -> None:
    """A forger who writes the victim's account into the payload cannot sign it with the victim's key."""
    payload = canonical_json({"account": USER.address, "gateway": GATEWAY.address, "consensus": None, "issued_at": 1})
    forged = f"{PREFIX}{b64url(payload)}.{b64url(GATEWAY.sign('cloister/api-key/v1', payload))}"
    with pytest.raises(ApiKeyRejected, match="not signed"):
        parse_api_key(forged).verify(USER.public.signing_key)


def test_every_character_change_is_refused() -> None:
    text = make_api_key(USER, GATEWAY.address, "sampling:3", issued_at=99)
    alphabet = "AZaz09-_.=+/ "
    for index in range(len(text)):
        for char in alphabet:
            if char == text[index]:
                continue
            tampered = text[:index] + char + text[index + 1 :]
            with pytest.raises(ApiKeyRejected):
                parse_api_key(tampered).verify(USER.public.signing_key)


def test_truncated_keys_are_refused() -> None:
    text = make_api_key(USER, GATEWAY.address, issued_at=5)
    for size in range(len(text)):
        with pytest.raises(ApiKeyRejected):
            parse_api_key(text[:size]).verify(USER.public.signing_key)


def signed_key(payload: bytes) -> str:
    return f"{PREFIX}{b64url(payload)}.{b64url(USER.sign('cloister/api-key/v1', payload))}"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"account": "x"}',
        canonical_json({"account": "nope", "gateway": GATEWAY.address, "consensus": None, "issued_at": 1}),
        canonical_json({"account": USER.address, "gateway": GATEWAY.address, "consensus": "many", "issued_at": 1}),
        canonical_json(
            {"account": USER.address, "gateway": GATEWAY.address, "consensus": "cross:0.10,1", "issued_at": 1}
        ),
        canonical_json({"account": USER.address, "gateway": GATEWAY.address, "consensus": None, "issued_at": -1}),
        canonical_json({"account": USER.address, "gateway": GATEWAY.address, "consensus": None}),
        canonical_json(
            {"account": USER.address, "gateway": GATEWAY.address, "consensus": None, "issued_at": 1, "admin": True}
        ),
        b"[1,2]",
        b"\xff\xfe",
    ],
)
def test_well_signed_but_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ApiKeyRejected):
        parse_api_key(signed_key(payload))


def test_other_spellings_are_refused() -> None:
    text = make_api_key(USER, GATEWAY.address, issued_at=7)
    body, sig = text[len(PREFIX) :].split(".")
    for variant in (
        f"{PREFIX}{body}==.{sig}",  # padded
        f"{PREFIX}{body}.{sig}.{sig}",
        f"{PREFIX}{body}",
        f"sk_{body}.{sig}",
        text + "A" * 1024,
        f"{PREFIX}{base64.b64encode(base64.urlsafe_b64decode(body + '==')).decode()}.{sig}",
    ):
        with pytest.raises(ApiKeyRejected):
            parse_api_key(variant)
    with pytest.raises(ApiKeyRejected):
        parse_api_key(None)  # type: ignore[arg-type]
