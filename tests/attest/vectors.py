"""Where the real attestation evidence lives: ``../shared/vectors`` beside the checkout, or ``$CLOISTER_VECTORS``.

The files are read in place and never copied into this repository; MANIFEST.md there states what a correct
verifier concludes for each of them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VECTORS = Path(os.environ.get("CLOISTER_VECTORS", REPO.parent / "shared" / "vectors"))


def vector(relpath: str) -> Path:
    """The path of one vector file; the test fails (it is not skipped) if the vectors are missing."""
    path = VECTORS / relpath
    if not path.is_file():
        pytest.fail(
            f"attestation vector {path} is missing: put shared/vectors beside the checkout or set CLOISTER_VECTORS"
        )
    return path


def read(relpath: str) -> bytes:
    return vector(relpath).read_bytes()
