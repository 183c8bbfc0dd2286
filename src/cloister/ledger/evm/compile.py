"""Compile ``contracts/*.sol`` with the pinned solc-js through ``--standard-json``, reproducibly.

The output (ABI, creation bytecode, compiler version, settings and a digest of the sources) is written to
``artifacts/Cloister.json`` with sorted keys, so compiling the same sources again gives the same bytes; a test
checks the committed artifact is current. Run ``python -m cloister.ledger.evm.compile`` after editing a
contract (``--check`` only compares).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.errors import ConfigError
from cloister.ledger.evm.toolchain import checkout_root, node_binary, node_modules

CONTRACT = "Cloister"
LIBRARIES = ("Accounts", "Machines", "Offers", "Orders", "Failover", "Deployments", "Disputes")
"""The linked libraries that hold the transactions; deployed first, their addresses linked into the contract."""
MAIN_SOURCE = "contracts/Cloister.sol"
ARTIFACT = Path(__file__).with_name("artifacts") / f"{CONTRACT}.json"
_OUTPUTS = ["abi", "evm.bytecode.object", "evm.bytecode.linkReferences", "evm.deployedBytecode.object"]
SETTINGS: dict[str, Any] = {
    "optimizer": {"enabled": True, "runs": 200},
    "viaIR": True,
    "evmVersion": "cancun",
    "outputSelection": {f"contracts/{name}.sol": {name: _OUTPUTS} for name in (CONTRACT, *LIBRARIES)},
}

# Runs solc-js in node: standard JSON in on stdin, out on stdout, the compiler's version on stderr.
_DRIVER = """
const solc = require('solc');
let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => { process.stderr.write(solc.version()); process.stdout.write(solc.compile(input)); });
"""


def sources(root: Path) -> dict[str, str]:
    """Every ``.sol`` file under ``contracts/``, keyed by its path from the checkout root."""
    found = {path.relative_to(root).as_posix(): path.read_text() for path in sorted((root / "contracts").glob("*.sol"))}
    if MAIN_SOURCE not in found:
        raise ConfigError(f"{root / MAIN_SOURCE} is missing; the checkout is incomplete")
    return found


def compile_contracts(root: Path | None = None) -> dict[str, Any]:
    """The artifact for the sources under ``root``: raise :class:`ConfigError` with solc's messages if any fail."""
    root = root or checkout_root()
    code = sources(root)
    request = {"language": "Solidity", "sources": {k: {"content": v} for k, v in code.items()}, "settings": SETTINGS}
    modules = node_modules()
    done = subprocess.run(
        [node_binary(), "-e", _DRIVER],
        input=json.dumps(request).encode(),
        capture_output=True,
        cwd=modules.parent,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        raise ConfigError(f"solc-js failed to run: {done.stderr.decode(errors='replace')[-2000:]}; run `npm ci`")
    output = json.loads(done.stdout)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise ConfigError("the contracts do not compile:\n" + "\n".join(e["formattedMessage"] for e in errors))
    return {
        "compiler": f"solc-js {done.stderr.decode().strip()}",
        "settings": SETTINGS,
        "sources_digest": digest_bytes(canonical_json(code)),
        "contracts": {name: _unit(output, name) for name in (CONTRACT, *LIBRARIES)},
    }


def _unit(output: dict[str, Any], name: str) -> dict[str, Any]:
    compiled = output["contracts"][f"contracts/{name}.sol"][name]
    bytecode = compiled["evm"]["bytecode"]
    links = [
        {"library": library, "start": ref["start"], "length": ref["length"]}
        for refs in bytecode["linkReferences"].values()
        for library, places in refs.items()
        for ref in places
    ]
    return {
        "abi": compiled["abi"],
        "bytecode": bytecode["object"],
        "links": sorted(links, key=lambda link: link["start"]),
        "deployed_size": len(compiled["evm"]["deployedBytecode"]["object"]) // 2,
    }


def artifact_bytes(artifact: dict[str, Any]) -> bytes:
    return (json.dumps(artifact, indent=1, sort_keys=True) + "\n").encode()


def load_artifact() -> dict[str, Any]:
    """The committed artifact the ledger deploys and talks to."""
    try:
        data: dict[str, Any] = json.loads(ARTIFACT.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {ARTIFACT} ({exc}); run `python -m cloister.ledger.evm.compile`") from None
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed artifact is not current")
    args = parser.parse_args(argv)
    fresh = artifact_bytes(compile_contracts())
    if args.check:
        if not ARTIFACT.exists() or ARTIFACT.read_bytes() != fresh:
            print(f"{ARTIFACT} is stale: run python -m cloister.ledger.evm.compile", file=sys.stderr)
            return 1
        return 0
    ARTIFACT.write_bytes(fresh)
    print(f"wrote {ARTIFACT} ({len(fresh)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
