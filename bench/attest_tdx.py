"""Intel TDX quote verification per second, with and without the chain cache, against the raw signature check.

The baseline is the one operation no verifier can skip: the quote's ECDSA P-256 signature over header ‖ body with
the attestation key, done directly with ``cryptography``. The ratio says how many such checks one full
verification costs (parsing, the PCK chain and its SGX extensions, the QE report signature and binding, and in the
collateral case the TCB signing chain, two signed JSON bodies and the TCB level evaluation). Reads the real vectors
from ``$CLOISTER_VECTORS`` (default ``../shared/vectors``).

    .venv/bin/python bench/attest_tdx.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from cloister.attest import tdx
from cloister.attest.cache import ChainCache
from rates import compare_modes, print_modes

VECTORS = Path(os.environ.get("CLOISTER_VECTORS", Path(__file__).resolve().parents[1].parent / "shared" / "vectors"))
TDX = VECTORS / "tdx"


def _cases() -> list[tuple[str, tdx.Evidence, datetime, tdx.TimeSet]]:
    collateral = tdx.Collateral(
        tcb_info=(TDX / "trustee_tcbInfo.json").read_bytes(),
        qe_identity=(TDX / "trustee_enclaveIdentity.json").read_bytes(),
        signing_chain=(TDX / "gotdx_tcbinfo_issuer_chain.pem").read_bytes(),
    )
    return [
        (
            "quote v4 (SPR E4)",
            tdx.Evidence((TDX / "gotdx_tdx_prod_quote_SPR_E4.dat").read_bytes()),
            datetime(2023, 7, 1, 1, tzinfo=UTC),
            tdx.TimeSet(),
        ),
        (
            "quote v4 + TCB info + QE identity",
            tdx.Evidence((TDX / "trustee_tdx_quote_6.dat").read_bytes(), collateral=collateral),
            datetime(2025, 11, 1, tzinfo=UTC),
            tdx.TimeSet(signing_chain=datetime(2025, 5, 1, tzinfo=UTC)),
        ),
    ]


def _raw_signature_check(evidence: tdx.Evidence) -> Callable[[], None]:
    """The quote signature verified with ``cryptography`` directly, key and DER signature prepared."""
    quote = tdx.parse_quote(evidence.quote)
    key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + quote.attestation_key)
    signature = quote.signature
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))

    def check() -> None:
        key.verify(der, quote.signed, ec.ECDSA(hashes.SHA256()))

    return check


def run(seconds: float) -> list[dict[str, object]]:
    """One row per case and mode; ``cost_in_signatures`` = raw rate / this rate."""
    rows: list[dict[str, object]] = []
    for case, evidence, now, times in _cases():
        modes: dict[str, object] = {
            "no cache": tdx.VerifyOptions(now=now, times=times),
            "chain cache": tdx.VerifyOptions(now=now, times=times, cache=ChainCache()),
        }
        verify = lambda options, evidence=evidence: tdx.verify(evidence, options)  # noqa: E731
        rows += compare_modes(case, "raw ECDSA P-256", _raw_signature_check(evidence), verify, modes, seconds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time spent on each measurement")
    print_modes(run(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
