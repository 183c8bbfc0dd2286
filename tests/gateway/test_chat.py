"""Choosing a request's consensus mode and client nonce (pure: no network needed)."""

from __future__ import annotations

import pytest

from cloister.consensus.modes import parse_mode
from cloister.errors import BadRequest, InvalidConsensusMode
from cloister.gateway.auth import Caller
from cloister.gateway.chat import DEFAULT_MODE, client_nonce, consensus_mode
from cloister.gateway.deployments import Deployment

KEYED = Caller("cl" + "1" * 40, parse_mode("sampling:3"))
PLAIN = Caller("cl" + "2" * 40, None)


def deployment(default: str | None) -> Deployment:
    mode = None if default is None else parse_mode(default)
    return Deployment("or-1", "cl" + "3" * 40, 0, mode, "sha256:" + "0" * 64, 0, (), ())


def test_the_header_wins_then_the_key_then_the_deployment_then_single() -> None:
    header = {"x-cloister-consensus": "cross:0.5,2"}
    assert consensus_mode(header, KEYED, deployment("obfuscated:2")) == parse_mode("cross:0.5,2")
    assert consensus_mode({}, KEYED, deployment("obfuscated:2")) == parse_mode("sampling:3")
    assert consensus_mode({}, PLAIN, deployment("obfuscated:2")) == parse_mode("obfuscated:2")
    assert consensus_mode({}, PLAIN, deployment(None)) == DEFAULT_MODE == parse_mode("single")


@pytest.mark.parametrize("header", ["", "sampling", "sampling:0", "cross:2,1", "single:1", "obfuscated:-1"])
def test_a_bad_mode_header_names_the_header(header: str) -> None:
    with pytest.raises(InvalidConsensusMode) as refused:
        consensus_mode({"x-cloister-consensus": header}, PLAIN, deployment(None))
    assert refused.value.details["param"] == "x-cloister-consensus"
    assert refused.value.http_status == 400


def test_the_clients_nonce_is_used_else_the_gateway_draws_one() -> None:
    assert client_nonce({"x-cloister-nonce": "00ff"}) == (b"\x00\xff", False)
    drawn, by_gateway = client_nonce({})
    assert by_gateway and len(drawn) == 16 and drawn != client_nonce({})[0]


@pytest.mark.parametrize("header", ["", "0", "xyz", "ab" * 65, "0x12"])
def test_a_bad_nonce_is_refused(header: str) -> None:
    with pytest.raises(BadRequest) as refused:
        client_nonce({"x-cloister-nonce": header})
    assert refused.value.details["param"] == "x-cloister-nonce"
