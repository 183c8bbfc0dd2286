"""Sealed requests and answers: only the deployment opens the request, only the client opens the answer."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloister.consensus.requests import normalize_request
from cloister.consensus.sealing import REQUEST_INFO, open_request, open_response, seal_request, seal_response
from cloister.crypto.canonical import canonical_json
from cloister.crypto.hpke import seal
from cloister.errors import IntegrityError, InvalidRequest, MalformedInput

ORDER, OTHER_ORDER = "or-00000000000000aa", "or-00000000000000bb"
PROMPT = "my secret diagnosis is 42"
BODY = {"model": ORDER, "messages": [{"role": "user", "content": PROMPT}], "temperature": 0.5}
DEPLOYMENT = X25519PrivateKey.generate()
DEPLOYMENT_KEY = DEPLOYMENT.public_key().public_bytes_raw()
ANSWER = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"message": {"content": "the answer"}}]}


def test_round_trip() -> None:
    sealed, secret = seal_request(DEPLOYMENT_KEY, ORDER, BODY)
    body, response_key = open_request(DEPLOYMENT, ORDER, sealed)
    assert normalize_request(body) == normalize_request(BODY)
    assert response_key == secret.public_key().public_bytes_raw()
    digest = normalize_request(body).digest
    answer = seal_response(response_key, ORDER, digest, ANSWER)
    assert open_response(secret, ORDER, digest, answer) == ANSWER


def test_the_gateway_sees_neither_prompt_nor_answer() -> None:
    sealed, secret = seal_request(DEPLOYMENT_KEY, ORDER, BODY)
    assert PROMPT.encode() not in sealed and b"diagnosis" not in sealed
    digest = normalize_request(BODY).digest
    answer = seal_response(secret.public_key().public_bytes_raw(), ORDER, digest, ANSWER)
    assert b"the answer" not in answer
    # nor can it open them with the keys it does hold (its own, or the deployment's public key)
    with pytest.raises(IntegrityError):
        open_request(X25519PrivateKey.generate(), ORDER, sealed)
    with pytest.raises(IntegrityError):
        open_response(X25519PrivateKey.generate(), ORDER, digest, answer)


def test_a_request_replayed_to_another_deployment_fails() -> None:
    sealed, _ = seal_request(DEPLOYMENT_KEY, ORDER, BODY)
    with pytest.raises(IntegrityError):
        open_request(DEPLOYMENT, OTHER_ORDER, sealed)


def test_an_answer_for_another_request_or_deployment_fails() -> None:
    sealed, secret = seal_request(DEPLOYMENT_KEY, ORDER, BODY)
    _, response_key = open_request(DEPLOYMENT, ORDER, sealed)
    digest = normalize_request(BODY).digest
    answer = seal_response(response_key, ORDER, digest, ANSWER)
    other_digest = normalize_request({**BODY, "seed": 1}).digest
    with pytest.raises(IntegrityError):
        open_response(secret, ORDER, other_digest, answer)
    with pytest.raises(IntegrityError):
        open_response(secret, OTHER_ORDER, digest, answer)


def test_every_byte_flip_and_truncation_fails() -> None:
    sealed, secret = seal_request(DEPLOYMENT_KEY, ORDER, BODY)
    for index in range(len(sealed)):
        tampered = sealed[:index] + bytes([sealed[index] ^ 0x01]) + sealed[index + 1 :]
        with pytest.raises(IntegrityError):
            open_request(DEPLOYMENT, ORDER, tampered)
    for size in (0, 10, 47, len(sealed) - 1):
        with pytest.raises((IntegrityError, MalformedInput)):
            open_request(DEPLOYMENT, ORDER, sealed[:size])
    digest = normalize_request(BODY).digest
    answer = seal_response(secret.public_key().public_bytes_raw(), ORDER, digest, ANSWER)
    for index in range(0, len(answer), 7):
        tampered = answer[:index] + bytes([answer[index] ^ 0x80]) + answer[index + 1 :]
        with pytest.raises(IntegrityError):
            open_response(secret, ORDER, digest, tampered)


def test_bad_requests_fail_before_sealing() -> None:
    with pytest.raises(InvalidRequest) as caught:
        seal_request(DEPLOYMENT_KEY, ORDER, {**BODY, "temperature": 9})
    assert caught.value.param == "temperature"
    with pytest.raises(InvalidRequest) as caught:
        seal_request(DEPLOYMENT_KEY, ORDER, {**BODY, "stream": True})
    assert caught.value.param == "stream"
    with pytest.raises(MalformedInput):
        seal_request(b"short", ORDER, BODY)
    with pytest.raises(MalformedInput):
        seal_request(DEPLOYMENT_KEY, "", BODY)


@pytest.mark.parametrize(
    ("plaintext", "error"),
    [
        (b"not json", MalformedInput),
        (canonical_json({"request": BODY["messages"], "response_key": "00" * 32}), MalformedInput),
        (canonical_json({"request": {"model": ORDER}, "response_key": "00" * 32}), InvalidRequest),
        (canonical_json({"request": {**BODY, "temperature": "0.5"}, "response_key": "00" * 31}), MalformedInput),
        (canonical_json({"request": {**BODY, "temperature": "0.5"}}), MalformedInput),
    ],
)
def test_well_sealed_but_malformed_requests_are_refused(plaintext: bytes, error: type[Exception]) -> None:
    sealed = seal(DEPLOYMENT_KEY, plaintext, info=REQUEST_INFO, aad=ORDER.encode())
    with pytest.raises(error):
        open_request(DEPLOYMENT, ORDER, sealed)


def test_oversized_input_is_refused() -> None:
    with pytest.raises(MalformedInput):
        open_request(DEPLOYMENT, ORDER, b"\0" * ((4 << 20) + 1))
