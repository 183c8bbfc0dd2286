"""Property tests: random, truncated and mutated bytes given to every nvgpu parser raise only typed errors."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.attest.nvgpu.nvvectors import DRIVER_RIM_TEST, VALID, gpu, rim

from cloister.attest import nvgpu
from cloister.attest.nvgpu.device import OID_DICE_TCB_INFO, parse_fwid
from cloister.attest.nvgpu.evidence import read_certificates
from cloister.attest.nvgpu.opaque import parse_opaque
from cloister.attest.nvgpu.spdm import parse_hex_report, parse_report
from cloister.errors import EvidenceMalformed

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REPORT = gpu(VALID[2].report, VALID[2].chain).report
CHAIN_DER = b"".join(cert.der for cert in gpu(VALID[2].report, VALID[2].chain).certificates)
OPAQUE = parse_report(REPORT).response.opaque
LEAF = gpu(VALID[0].report, VALID[0].chain).certificates[0]
FWID_EXTENSION = LEAF.extension(OID_DICE_TCB_INFO).value  # type: ignore[union-attr]
RIM = rim(DRIVER_RIM_TEST)


def only_typed(parse: Callable[[Any], object], data: Any) -> None:
    """``parse`` either returns or raises :class:`EvidenceMalformed`; nothing else escapes."""
    with contextlib.suppress(EvidenceMalformed):
        parse(data)


def mutated(original: bytes) -> st.SearchStrategy[bytes]:
    """``original`` with a few bytes replaced, cut, or extended: structure-aware enough to reach deep fields."""
    edits = st.lists(st.tuples(st.integers(0, len(original) - 1), st.integers(0, 255)), min_size=1, max_size=4)

    def apply(changes: list[tuple[int, int]], cut: int, tail: bytes) -> bytes:
        data = bytearray(original)
        for index, value in changes:
            data[index] = value
        return bytes(data[:cut]) + tail

    return st.builds(apply, edits, st.integers(0, len(original)), st.binary(max_size=8))


PARSERS: list[tuple[str, Callable[[bytes], object], bytes]] = [
    ("spdm", parse_report, REPORT),
    ("opaque", parse_opaque, OPAQUE),
    ("fwid", parse_fwid, FWID_EXTENSION),
    ("certificates", read_certificates, CHAIN_DER),
    ("rim", nvgpu.parse_rim, RIM),
]


@pytest.mark.parametrize(("name", "parse", "valid"), PARSERS, ids=[name for name, _, _ in PARSERS])
def test_random_bytes(name: str, parse: Callable[[bytes], object], valid: bytes) -> None:
    @FUZZ
    @given(st.binary(max_size=600))
    def run(data: bytes) -> None:
        only_typed(parse, data)

    run()


@pytest.mark.parametrize(("name", "parse", "valid"), PARSERS, ids=[name for name, _, _ in PARSERS])
def test_every_truncation_is_refused(name: str, parse: Callable[[bytes], object], valid: bytes) -> None:
    """Self-delimiting formats refuse every cut; lists of records (opaque fields, a chain) may end on a boundary."""
    whole = parse(valid)
    step = max(1, len(valid) // 400)
    for cut in range(0, len(valid), step):
        try:
            part = parse(valid[:cut])
        except EvidenceMalformed:
            continue
        assert name in ("opaque", "certificates"), cut
        items, whole_items = (part.fields, whole.fields) if name == "opaque" else (part, whole)  # type: ignore[attr-defined]
        assert whole_items[: len(items)] == items


@pytest.mark.parametrize(("name", "parse", "valid"), PARSERS, ids=[name for name, _, _ in PARSERS])
def test_mutations(name: str, parse: Callable[[bytes], object], valid: bytes) -> None:
    @FUZZ
    @given(mutated(valid))
    def run(data: bytes) -> None:
        only_typed(parse, data)

    run()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 40), st.binary(max_size=50)), max_size=12))
def test_opaque_tlvs(fields: list[tuple[int, bytes]]) -> None:
    data = b"".join(k.to_bytes(2, "little") + len(v).to_bytes(2, "little") + v for k, v in fields)
    only_typed(parse_opaque, data)


@FUZZ
@given(st.text(max_size=200))
def test_hex_text(text: str) -> None:
    only_typed(parse_hex_report, text)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
ENTRY_KEYS = st.sampled_from(["arch", "certificate", "evidence", "nonce", "version"])


@FUZZ
@given(JSON | st.lists(st.dictionaries(ENTRY_KEYS, JSON, max_size=5), max_size=3))
def test_evidence_json(data: Any) -> None:
    only_typed(nvgpu.Evidence.from_json, json.loads(json.dumps(data)))
