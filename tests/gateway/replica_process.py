"""One replica in its own process, as a provider node runs it: prepare the deployment, start the engine and the
replica server, print the endpoint as JSON, serve until stdin closes (or the process is killed).

Usage: ``python tests/gateway/replica_process.py '<json settings>'`` (see ``tests/gateway/replicas.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cloister.ledger.embedded import EmbeddedLedger
from cloister.node.keys import load_or_create_loader_identity
from cloister.runtime.loader import TrustedLoader
from cloister.runtime.serving import start_replica
from cloister.storage import LocalBlobStore


def main() -> None:
    settings = json.loads(sys.argv[1])
    ledger = EmbeddedLedger.open(Path(settings["ledger"]))
    loader = TrustedLoader(
        identity=load_or_create_loader_identity(Path(settings["node_folder"])),
        machine_id=settings["machine_id"],
        tcb_id=settings["tcb_id"],
        store=LocalBlobStore(Path(settings["blobs"])),
        workspace_root=Path(settings["workspaces"]),
        threads=1,
    )
    order = ledger.order(settings["order_id"])
    offers = {offer_id: ledger.offer(offer_id) for offer_id in order.content_offers}
    prepared = loader.prepare(order, offers, ledger.grants(order.order_id), ledger.account(order.owner))
    handle = start_replica(loader, prepared, ledger=ledger, fault=settings["fault"])
    endpoint = {
        "url": handle.url,
        "deployment_key": handle.deployment_key.hex(),
        "key_signature": handle.key_signature.hex(),
    }
    print(json.dumps(endpoint), flush=True)
    sys.stdin.read()
    handle.stop()
    ledger.close()


if __name__ == "__main__":
    main()
