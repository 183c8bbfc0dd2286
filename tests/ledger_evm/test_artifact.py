"""The compiled contracts: reproducible from the sources, under the code size limit, fully mapped in Python."""

from __future__ import annotations

import subprocess
import sys

from cloister.ledger.evm import reverts
from cloister.ledger.evm.compile import ARTIFACT, artifact_bytes, compile_contracts, load_artifact
from cloister.ledger.evm.events import EVENTS
from cloister.ledger.evm.ledger import contract_abi

EIP170_LIMIT = 24_576


def test_recompiling_the_sources_gives_the_committed_artifact_byte_for_byte() -> None:
    assert artifact_bytes(compile_contracts()) == ARTIFACT.read_bytes()


def test_every_contract_fits_any_chain() -> None:
    sizes = {name: unit["deployed_size"] for name, unit in load_artifact()["contracts"].items()}
    assert all(size <= EIP170_LIMIT for size in sizes.values()), sizes


def test_every_rejection_and_event_of_the_contracts_is_mapped() -> None:
    abi = contract_abi()
    assert {error.name for error in abi.errors.values()} == reverts.HANDLED
    assert {event.name for event in abi.events.values()} == set(EVENTS)


def test_loading_the_backend_keeps_the_interpreters_recursion_limit() -> None:
    probe = "import sys; from cloister.ledger.evm.ledger import EvmLedger; print(sys.getrecursionlimit())"
    default = subprocess.run([sys.executable, "-c", "import sys; print(sys.getrecursionlimit())"], capture_output=True)
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True)
    assert loaded.stdout == default.stdout
