"""Sealed requests: a client encrypts its prompt to the deployment key, so only attested replicas can read it.

The gateway routes the ciphertext without being able to open it. The request carries a fresh X25519 key to which
the replica seals its answer, so the gateway cannot read the answer either. Both directions are HPKE bound to the
deployment (order id) as AAD, and the answer also to the request digest: neither can be replayed to another
deployment, nor an answer passed off for another request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from cloister.consensus.requests import normalize_request
from cloister.consensus.wire import check_digest, check_id, hex_decode, json_object, malformed
from cloister.crypto.canonical import canonical_json, loads
from cloister.crypto.hpke import open_sealed, seal
from cloister.errors import InvalidRequest

REQUEST_INFO = b"cloister/sealed-request/v1"
RESPONSE_INFO = b"cloister/sealed-response/v1"
KEY_SIZE = 32
MAX_SEALED = 4 << 20
"""Largest sealed request or response, in bytes."""


def seal_request(
    deployment_key: bytes, order_id: str, request_body: Mapping[str, Any]
) -> tuple[bytes, X25519PrivateKey]:
    """Seal a chat request to the deployment key; keep the returned secret to open the answer.

    The request is normalized first (so a bad request fails here, not after a round trip) and cannot stream:
    a sealed answer comes back whole.
    """
    check_id(order_id, "order id")
    request = normalize_request(request_body)
    if request.stream:
        raise InvalidRequest("a sealed request cannot stream; send it with stream false", param="stream")
    response_secret = X25519PrivateKey.generate()
    plaintext = canonical_json(
        {"request": request.to_json(), "response_key": response_secret.public_key().public_bytes_raw().hex()}
    )
    return seal(deployment_key, plaintext, info=REQUEST_INFO, aad=order_id.encode()), response_secret


def open_request(deployment_private: X25519PrivateKey, order_id: str, sealed: bytes) -> tuple[dict[str, Any], bytes]:
    """Inside a replica: the request body (normalized form) and the client's response key."""
    check_id(order_id, "order id")
    plaintext = open_sealed(deployment_private, _bounded(sealed), info=REQUEST_INFO, aad=order_id.encode())
    f = json_object(loads(plaintext), "sealed request", ("request", "response_key"))
    if not isinstance(f["request"], dict):
        malformed("a sealed request holds the chat request as a JSON object")
    normalize_request(f["request"])
    return f["request"], hex_decode(f["response_key"], "response key", KEY_SIZE, KEY_SIZE)


def seal_response(response_key: bytes, order_id: str, request_digest: str, body: Mapping[str, Any]) -> bytes:
    """Inside a replica: seal the answer to the client's response key, bound to this deployment and request."""
    plaintext = json.dumps(dict(body), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return seal(response_key, plaintext, info=RESPONSE_INFO, aad=_response_aad(order_id, request_digest))


def open_response(
    response_secret: X25519PrivateKey, order_id: str, request_digest: str, sealed: bytes
) -> dict[str, Any]:
    """At the client: the answer, if a replica sealed it for this deployment and this request."""
    aad = _response_aad(order_id, request_digest)
    body = loads(open_sealed(response_secret, _bounded(sealed), info=RESPONSE_INFO, aad=aad))
    if not isinstance(body, dict):
        malformed("a sealed response holds a JSON object")
    return body


def _response_aad(order_id: str, request_digest: str) -> bytes:
    check_id(order_id, "order id")
    check_digest(request_digest, "request digest")
    return canonical_json({"order_id": order_id, "request_digest": request_digest})


def _bounded(sealed: bytes) -> bytes:
    if not isinstance(sealed, bytes) or len(sealed) > MAX_SEALED:
        malformed(f"a sealed message is bytes, at most {MAX_SEALED} of them")
    return sealed
