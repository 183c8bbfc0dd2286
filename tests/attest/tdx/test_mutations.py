"""Byte flips over every valid quote: each flip of the signed header ‖ body is rejected, and no accepted flip
anywhere yields claims different from the original's (only the unsigned PEM text's whitespace may vary)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from tests.attest.vectors import read

from cloister.attest import tdx
from cloister.attest.cache import ChainCache
from cloister.errors import AttestationError

VALID = {
    "tdx/gotdx_tdx_prod_quote_SPR_E4.dat": datetime(2023, 7, 1, 1, tzinfo=UTC),
    "tdx/gotdx_quote_v5_sample.dat": datetime(2026, 2, 3, 1, tzinfo=UTC),
    "tdx/gotdx_cos-113-tdx-quote.dat": datetime(2025, 1, 1, tzinfo=UTC),
    "tdx/trustee_tdx_quote_4.dat": datetime(2025, 1, 1, tzinfo=UTC),
    "tdx/trustee_tdx_quote_5.dat": datetime(2025, 1, 1, tzinfo=UTC),
    "tdx/trustee_tdx_quote_6.dat": datetime(2025, 11, 1, tzinfo=UTC),
    "tdx/trustee_az-tdx-vtpm_td-quote.bin": datetime(2025, 1, 1, tzinfo=UTC),
}


def flipped(data: bytes, offset: int, mask: int) -> bytes:
    mutated = bytearray(data)
    mutated[offset] ^= mask
    return bytes(mutated)


@pytest.mark.parametrize("name", sorted(VALID))
def test_every_signed_byte_flip_is_rejected(name: str) -> None:
    data = read(name)
    options = tdx.VerifyOptions(now=VALID[name], cache=ChainCache())
    signed = len(tdx.parse_quote(data).signed)
    tdx.verify(tdx.Evidence(data), options)
    for offset in range(signed):  # one flipped bit per byte, cycling through the bit positions
        with pytest.raises(AttestationError):
            tdx.verify(tdx.Evidence(flipped(data, offset, 1 << offset % 8)), options)


def _sweep(name: str, step: int) -> set[int]:
    """Flip bytes after the signed region; return the offsets of flips that were accepted."""
    data = read(name)
    options = tdx.VerifyOptions(now=VALID[name], cache=ChainCache())
    original = tdx.verify(tdx.Evidence(data), options)
    quote = tdx.parse_quote(data)
    accepted = set()
    for offset in range(len(quote.signed), len(data), step):
        try:
            claims = tdx.verify(tdx.Evidence(flipped(data, offset, 0x01)), options)
        except AttestationError:
            continue
        assert claims == original, f"byte {offset:#x} changed the claims"
        accepted.add(offset)
    pem_start = quote.size - len(quote.pck_chain)
    pem = data[pem_start : quote.size]
    for offset in accepted:  # only PEM whitespace inside the chain, or bytes after the quote, may vary
        assert offset >= quote.size or pem[offset - pem_start] in b"\n\r\t \x0b\x0c\x00", f"byte {offset:#x}"
    return accepted


def test_every_byte_of_a_whole_quote() -> None:
    name = "tdx/gotdx_tdx_prod_quote_SPR_E4.dat"
    accepted = _sweep(name, 1)
    assert set(range(4935, 4974)) <= accepted  # the trailing ASCII is not part of the quote


@pytest.mark.parametrize("name", sorted(set(VALID) - {"tdx/gotdx_tdx_prod_quote_SPR_E4.dat"}))
def test_a_dense_sample_of_the_other_quotes(name: str) -> None:
    _sweep(name, 7)
