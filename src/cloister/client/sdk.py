"""The Python SDK every role uses: accounts, publishing encrypted content as offers, and getting it back.

A :class:`Client` binds one local account (from the keystore) to a ledger and a blob store. Plaintext never leaves
this process: content is hashed, sealed with a fresh content key, and only the ciphertext is uploaded; the key
stays in the keystore until a later key grant seals it to an attested machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cloister.client.config import LEDGER_ENV, read_devnet_file, resolve_blob_store, resolve_ledger_url
from cloister.client.devnet import EVM, Devnet
from cloister.crypto.digest import Readable, digest_file
from cloister.crypto.identity import Identity
from cloister.crypto.stream import generate_key, seal_file
from cloister.errors import ConfigError, DigestMismatch, NotAuthorized, RecordNotFound
from cloister.keystore import Keystore
from cloister.ledger.http import HttpLedger
from cloister.ledger.protocol import Ledger, TxReceipt
from cloister.ledger.records import Account, Offer, OfferKind, Pricing, Restrictions
from cloister.ledger.transactions import CreateOffer
from cloister.ledger.wallet import Wallet
from cloister.runtime.transfer import fetch_and_open
from cloister.storage import BlobStore, open_store

CONTENT_KINDS: dict[str, OfferKind] = {"model": "model", "dataset": "dataset", "engine": "engine"}


class ProgressFactory(Protocol):
    """Starts a progress bar for one phase and returns the function that advances it by a byte count."""

    def __call__(self, description: str, total: int | None) -> Callable[[int], None]: ...


def no_progress(description: str, total: int | None) -> Callable[[int], None]:
    return lambda _advance: None


class Client:
    """One account acting on one network. Connections open lazily, so cheap commands stay cheap."""

    def __init__(
        self,
        *,
        home: Path | None = None,
        account: str | None = None,
        ledger: Ledger | None = None,
        store: BlobStore | None = None,
        ledger_url: str | None = None,
        blob_store: str | None = None,
        progress: ProgressFactory = no_progress,
    ) -> None:
        self.keystore = Keystore(home)
        self.account_name = account
        self.progress = progress
        self._ledger = ledger
        self._store = store
        self._ledger_url = ledger_url
        self._blob_spec = blob_store
        self._identity: Identity | None = None
        self._wallet: Wallet | None = None

    # --- wiring ---------------------------------------------------------------------------------------------

    @property
    def ledger(self) -> Ledger:
        if self._ledger is None:
            self._ledger = self._connect()
        return self._ledger

    def _connect(self) -> Ledger:
        """An explicit or environment URL is an embedded ledger's server; otherwise whatever the devnet runs."""
        home = self.keystore.home
        devnet = read_devnet_file(home) or {}
        if self._ledger_url is None and os.environ.get(LEDGER_ENV) is None and devnet.get("ledger") == EVM:
            identities = [self.identity] if self._has_account() else []
            return Devnet(home).connect(devnet, identities)
        return HttpLedger(resolve_ledger_url(home, self._ledger_url))

    def _has_account(self) -> bool:
        return (self.account_name or self.keystore.default_account_name()) is not None

    @property
    def store(self) -> BlobStore:
        if self._store is None:
            self._store = open_store(resolve_blob_store(self.keystore.home, self._blob_spec))
        return self._store

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            self._identity = self.keystore.load_account(self.account_name)
        return self._identity

    @property
    def address(self) -> str:
        return self.identity.address

    @property
    def wallet(self) -> Wallet:
        if self._wallet is None:
            self._wallet = Wallet(self.identity, self.ledger)
        return self._wallet

    def close(self) -> None:
        close = getattr(self._ledger, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- accounts -------------------------------------------------------------------------------------------

    def create_account(self, name: str, *, service: bool = False) -> TxReceipt:
        """Create keys for ``name`` locally and register its public keys on the ledger (``service``: see
        :meth:`Keystore.create_account`)."""
        identity = self.keystore.create_account(name, service=service)
        self.account_name, self._identity, self._wallet = name, identity, None
        keyring = getattr(self._ledger, "keyring", None)
        if keyring is not None:  # an EVM ledger signs with each identity's Ethereum key
            keyring.add(identity)
        return self.wallet.register(name)

    def account(self, address: str | None = None) -> Account:
        return self.ledger.account(address or self.address)

    def fund(self, amount: int) -> TxReceipt:
        """Draw ``amount`` units from the devnet faucet."""
        return self.wallet.faucet(amount)

    def transfer(self, to: str, amount: int) -> TxReceipt:
        return self.wallet.transfer(to, amount)

    # --- content --------------------------------------------------------------------------------------------

    @contextmanager
    def _scratch(self) -> Iterator[Path]:
        base = self.keystore.home / "tmp"
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(dir=base))
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def publish(
        self,
        kind: str,
        path: Path,
        *,
        pricing: Pricing,
        restrictions: Restrictions,
        name: str | None = None,
        description: str = "",
    ) -> Offer:
        """Encrypt a file, upload the ciphertext and record an offer; the content key stays in the keystore."""
        offer_kind = CONTENT_KINDS.get(kind)
        if offer_kind is None:
            raise ConfigError(f"cannot publish {kind!r} content; choose one of {', '.join(CONTENT_KINDS)}")
        if not path.is_file():
            raise ConfigError(f"{path} is not a file")
        size = path.stat().st_size
        with path.open("rb") as source:
            advance = self.progress(f"hashing {path.name}", size)
            digest = digest_file(_Counting(source, advance))
        key = self.keystore.content_key(digest) if self.keystore.has_content_key(digest) else generate_key()
        with self._scratch() as scratch:
            sealed_path = scratch / "sealed"
            sealed = seal_file(key, path, sealed_path, progress=self.progress(f"encrypting {path.name}", size))
            if sealed.plaintext_digest != digest:
                raise DigestMismatch(f"{path} changed while it was being published; publish it again")
            with sealed_path.open("rb") as ciphertext:
                ref = self.store.put(ciphertext, progress=self.progress("uploading", sealed.ciphertext_size))
        self.keystore.put_content_key(
            digest, key, account=self.account_name or self.keystore.default_account_name() or ""
        )
        receipt = self.wallet.send(
            CreateOffer(
                kind=offer_kind,
                name=name or path.name,
                description=description,
                content_digest=digest,
                blob_uri=ref.uri,
                size=size,
                pricing=pricing,
                restrictions=restrictions,
                machine_ids=(),
            )
        )
        return self.ledger.offer(_created_id(receipt, "offer.created", "offer_id"))

    def download(self, digest: str, dest: Path) -> Path:
        """Fetch and decrypt content this account published; all-or-nothing, checked against its digest."""
        offers = self.ledger.offers(content_digest=digest, include_retired=True)
        if not offers:
            raise RecordNotFound(f"no offer on the ledger has content {digest}")
        mine = [offer for offer in offers if offer.owner == self.address]
        if not mine:
            raise NotAuthorized(
                f"content {digest} belongs to {offers[0].owner}; only its owner can download it in the clear "
                "(others receive it only inside an attested machine, through a key grant)"
            )
        key = self.keystore.content_key(digest)
        offer = mine[0]
        assert offer.blob_uri is not None  # content offers always carry one
        with self._scratch() as scratch:
            fetch_and_open(
                self.store,
                offer.blob_uri,
                key,
                dest,
                expected_digest=digest,
                scratch=scratch,
                fetched=self.progress("downloading", self.store.size(offer.blob_uri)),
                opened=self.progress("decrypting", offer.size),
            )
        return dest


class _Counting:
    """A read-only stream wrapper reporting how many bytes were read, for progress bars."""

    def __init__(self, inner: Readable, advance: Callable[[int], None]) -> None:
        self._inner = inner
        self._advance = advance

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._advance(len(data))
        return data


def _created_id(receipt: TxReceipt, kind: str, attr: str) -> str:
    for event in receipt.events:
        if event.kind == kind and attr in event.attrs:
            return str(event.attrs[attr])
    raise RecordNotFound(f"the ledger accepted the transaction but emitted no {kind} event")
