"""The typed records the contracts keep in state, and the strict JSON reader that parses them (and payloads).

Every record is a frozen dataclass whose ``to_json`` is its stored and wire form; ``from_json`` checks every
field (exact key set, types, ranges, formats), so a tampered or truncated value fails loudly instead of
flowing on. Bytes are hex in JSON, except the bulky ``tcb_evidence`` and ``sealed_key`` which are base64.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable
from typing import Any, ClassVar, Final, Literal, NoReturn, Self, TypeVar

from cloister.attest.tcb import SIMULATED, TRUSTED, Verdict
from cloister.consensus.commitment import MAX_COMMITMENT
from cloister.crypto.digest import PREFIX as DIGEST_PREFIX
from cloister.crypto.digest import is_digest
from cloister.crypto.identity import is_address
from cloister.errors import MalformedInput

# --- enumerations -------------------------------------------------------------------------------------------

OfferKind = Literal["model", "dataset", "engine", "compute"]
MODEL: Final = "model"
DATASET: Final = "dataset"
ENGINE: Final = "engine"
COMPUTE: Final = "compute"
OFFER_KINDS: Final[tuple[OfferKind, ...]] = (MODEL, DATASET, ENGINE, COMPUTE)
CONTENT_KINDS: Final[tuple[OfferKind, ...]] = (MODEL, DATASET, ENGINE)

PricingModel = Literal["free", "per_hour", "fixed", "revenue_share"]
FREE: Final = "free"
PER_HOUR: Final = "per_hour"
FIXED: Final = "fixed"
REVENUE_SHARE: Final = "revenue_share"
PRICING_MODELS: Final[tuple[PricingModel, ...]] = (FREE, PER_HOUR, FIXED, REVENUE_SHARE)
MAX_SHARE_BPS: Final = 10_000

OrderKind = Literal["finetune", "inference"]
FINETUNE: Final = "finetune"
INFERENCE: Final = "inference"
"""An inference order is a *deployment*: replicas serving a model (and adapters) behind a gateway."""
ORDER_KINDS: Final[tuple[OrderKind, ...]] = (FINETUNE, INFERENCE)

VERDICTS: Final[tuple[Verdict, ...]] = (TRUSTED, SIMULATED)

OrderState = Literal["pending_grants", "ready", "running", "completed", "failed", "cancelled"]
PENDING_GRANTS: Final = "pending_grants"
READY: Final = "ready"
RUNNING: Final = "running"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
ORDER_STATES: Final[tuple[OrderState, ...]] = (PENDING_GRANTS, READY, RUNNING, COMPLETED, FAILED, CANCELLED)
OPEN_ORDER_STATES: Final[tuple[OrderState, ...]] = (PENDING_GRANTS, READY, RUNNING)
"""States in which an order holds escrow and keeps its machines busy."""

# --- limits and identifiers ---------------------------------------------------------------------------------

MAX_AMOUNT: Final = (1 << 63) - 1
"""Upper bound of any amount, balance, size or time: keeps every value a signed 64-bit integer."""
MAX_NAME: Final = 128
MAX_TEXT: Final = 4096
MAX_URI: Final = 2048
MAX_ITEMS: Final = 64
MAX_TCB_EVIDENCE: Final = 256 * 1024
MAX_SEALED_KEY: Final = 4 * 1024
MAX_REASON: Final = 512
"""Longest reason a content owner gives for refusing a key (``grant.refuse``)."""
KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
MAX_ADAPTERS: Final = 8
"""Most LoRA adapters (model-kind offers) one deployment serves on top of its base model."""

MACHINE_ID_PREFIX: Final = "mc-"
OFFER_ID_PREFIX: Final = "of-"
ORDER_ID_PREFIX: Final = "or-"
DISPUTE_ID_PREFIX: Final = "dp-"
_ID_HEX = 16
_TOKEN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_HEX_RE = re.compile(r"^[0-9a-f]*$")


def derive_id(prefix: str, tx_hash: str) -> str:
    """Id of a record created by a transaction: ``prefix`` + the first 16 hex digits of the tx hash."""
    return prefix + tx_hash[len(DIGEST_PREFIX) : len(DIGEST_PREFIX) + _ID_HEX]


def is_record_id(text: object, prefix: str) -> bool:
    if not isinstance(text, str) or len(text) != len(prefix) + _ID_HEX or not text.startswith(prefix):
        return False
    return all(c in "0123456789abcdef" for c in text[len(prefix) :])


def is_token(text: object) -> bool:
    """A short identifier-like string: platform, region, GPU model."""
    return isinstance(text, str) and _TOKEN_RE.match(text) is not None


def account_key(address: str) -> str:
    return f"account/{address}"


def provider_key(address: str) -> str:
    return f"provider/{address}"


def machine_key(machine_id: str) -> str:
    return f"machine/{machine_id}"


def challenge_key(address: str) -> str:
    return f"challenge/{address}"


def offer_key(offer_id: str) -> str:
    return f"offer/{offer_id}"


def order_key(order_id: str) -> str:
    return f"order/{order_id}"


def grant_prefix(order_id: str) -> str:
    return f"grant/{order_id}/"


def grant_key(order_id: str, offer_id: str, machine_id: str) -> str:
    return f"{grant_prefix(order_id)}{offer_id}/{machine_id}"


def refusal_prefix(order_id: str) -> str:
    return f"refusal/{order_id}/"


def refusal_key(order_id: str, offer_id: str, machine_id: str) -> str:
    return f"{refusal_prefix(order_id)}{offer_id}/{machine_id}"


def checkpoint_prefix(order_id: str) -> str:
    return f"checkpoint/{order_id}/"


def checkpoint_key(order_id: str, machine_id: str) -> str:
    return f"{checkpoint_prefix(order_id)}{machine_id}"


def resume_grant_prefix(order_id: str) -> str:
    return f"resume/{order_id}/"


def resume_grant_key(order_id: str, machine_id: str) -> str:
    return f"{resume_grant_prefix(order_id)}{machine_id}"


def endpoint_prefix(order_id: str) -> str:
    return f"endpoint/{order_id}/"


def endpoint_key(order_id: str, machine_id: str) -> str:
    return f"{endpoint_prefix(order_id)}{machine_id}"


def credit_key(order_id: str, user: str) -> str:
    return f"credit/{order_id}/{user}"


def dispute_prefix(order_id: str) -> str:
    return f"dispute/{order_id}/"


def dispute_key(order_id: str, request_digest: str) -> str:
    return f"{dispute_prefix(order_id)}{request_digest}"


def timeout_prefix(order_id: str) -> str:
    return f"timeout/{order_id}/"


def timeout_key(order_id: str, machine_id: str, request_digest: str) -> str:
    return f"{timeout_prefix(order_id)}{machine_id}/{request_digest}"


# --- the strict field reader --------------------------------------------------------------------------------

T = TypeVar("T")
S = TypeVar("S", bound=str)
R = TypeVar("R", bound="JsonRecord")


class Fields:
    """Typed, bounded reads of one JSON object whose key set must be exactly ``names``.

    Every problem raises :class:`MalformedInput` naming the field, so callers can re-label it (a payload turns
    it into ``InvalidTransaction``) without losing which field was wrong.
    """

    def __init__(self, data: object, what: str, names: Collection[str]) -> None:
        if not isinstance(data, dict):
            raise MalformedInput(f"{what} must be a JSON object, got {type(data).__name__}")
        missing, unknown = sorted(set(names) - set(data)), sorted(set(data) - set(names))
        if missing or unknown:
            problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
                [f"unknown {', '.join(map(str, unknown))}"] if unknown else []
            )
            raise MalformedInput(f"{what} has the wrong fields ({'; '.join(problems)})")
        self._data: dict[str, Any] = data
        self.what = what

    def fail(self, name: str, expected: str) -> NoReturn:
        raise MalformedInput(f"{self.what}.{name} must be {expected}, got {self._data[name]!r:.80}")

    def optional(self, read: Callable[[str], T], name: str) -> T | None:
        """``None`` if the field is null, else ``read(name)``."""
        return None if self._data[name] is None else read(name)

    def text(self, name: str, max_len: int = MAX_NAME, *, empty: bool = False) -> str:
        value = self._data[name]
        if not isinstance(value, str) or len(value) > max_len or (not empty and not value):
            self.fail(name, f"a {'' if empty else 'non-empty '}string of at most {max_len} characters")
        return value

    def integer(self, name: str, lo: int = 0, hi: int = MAX_AMOUNT) -> int:
        value = self._data[name]
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            self.fail(name, f"an integer from {lo} to {hi}")
        return value

    def flag(self, name: str) -> bool:
        value = self._data[name]
        if not isinstance(value, bool):
            self.fail(name, "true or false")
        return value

    def checked(self, name: str, valid: Callable[[object], bool], expected: str) -> str:
        value = self._data[name]
        if not valid(value):
            self.fail(name, expected)
        return str(value)

    def address(self, name: str) -> str:
        return self.checked(name, is_address, "an account address (cl + 40 hex digits)")

    def digest(self, name: str) -> str:
        return self.checked(name, is_digest, "a digest (sha256: + 64 lower-case hex digits)")

    def token(self, name: str) -> str:
        return self.checked(name, is_token, "a short identifier (letters, digits, . _ : -)")

    def record_id(self, name: str, prefix: str) -> str:
        return self.checked(name, lambda v: is_record_id(v, prefix), f"an id like {prefix}<16 hex digits>")

    def choice(self, name: str, options: tuple[S, ...]) -> S:
        value = self._data[name]
        for option in options:
            if value == option:
                return option
        self.fail(name, f"one of {', '.join(options)}")

    def strings(
        self, name: str, valid: Callable[[object], bool], expected: str, *, unique: bool = True
    ) -> tuple[str, ...]:
        """At most :data:`MAX_ITEMS` strings, each passing ``valid`` (and distinct if ``unique``)."""
        value = self._data[name]
        if (
            not isinstance(value, list)
            or len(value) > MAX_ITEMS
            or not all(valid(item) for item in value)
            or (unique and len(set(value)) != len(value))
        ):
            distinct = " distinct" if unique else ""
            self.fail(name, f"a list of at most {MAX_ITEMS}{distinct} items, each {expected}")
        return tuple(value)

    def hex_bytes(self, name: str, size: int = KEY_SIZE) -> bytes:
        value = self._data[name]
        if not isinstance(value, str) or len(value) != 2 * size or _HEX_RE.match(value) is None:
            self.fail(name, f"{size} bytes as lower-case hex")
        return bytes.fromhex(value)

    def b64_bytes(self, name: str, max_size: int) -> bytes:
        """Standard, padded base64 in its one canonical spelling (so equal bytes always look the same)."""
        value = self._data[name]
        try:
            raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
        except (binascii.Error, ValueError):
            raw = b""
        if not raw or len(raw) > max_size or base64.b64encode(raw).decode() != value:
            self.fail(name, f"1 to {max_size} bytes as standard base64")
        return raw

    def b64_list(self, name: str, max_size: int, lo: int = 0, hi: int = MAX_ITEMS) -> tuple[bytes, ...]:
        """``lo`` to ``hi`` items, each as :meth:`b64_bytes` reads one."""
        value = self._data[name]
        if not isinstance(value, list) or not lo <= len(value) <= hi:
            self.fail(name, f"a list of {lo} to {hi} items, each 1 to {max_size} bytes as standard base64")
        return tuple(
            Fields({"item": item}, f"{self.what}.{name}[{i}]", ("item",)).b64_bytes("item", max_size)
            for i, item in enumerate(value)
        )

    def url(self, name: str) -> str:
        """An ``http://`` or ``https://`` URL of at most :data:`MAX_URI` characters."""
        value = self.text(name, MAX_URI)
        if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
            self.fail(name, "an http:// or https:// URL without spaces")
        return value

    def obj(self, name: str) -> dict[str, Any]:
        value = self._data[name]
        if not isinstance(value, dict):
            self.fail(name, "a JSON object")
        return value

    def record(self, name: str, cls: type[R]) -> R:
        """A nested record, read with the same strictness."""
        return cls.read(cls.fields_of(self._data[name], f"{self.what}.{name}"))


# --- records ------------------------------------------------------------------------------------------------


def encode_fields(obj: Any, base64_fields: Collection[str] = ()) -> dict[str, Any]:
    """JSON form of a dataclass: bytes as hex (or base64), tuples as lists, nested records as objects."""
    return {f.name: _encode(getattr(obj, f.name), f.name in base64_fields) for f in dataclasses.fields(obj)}


def _encode(value: Any, as_base64: bool) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode() if as_base64 else value.hex()
    if isinstance(value, tuple):
        return [_encode(item, as_base64) for item in value]
    if isinstance(value, JsonRecord):
        return value.to_json()
    return value


class JsonRecord(ABC):
    """A frozen dataclass with a strict JSON form; subclasses say how to :meth:`read` their fields."""

    BASE64: ClassVar[frozenset[str]] = frozenset()

    def to_json(self) -> dict[str, Any]:
        return encode_fields(self, self.BASE64)

    @classmethod
    def fields_of(cls, data: object, what: str) -> Fields:
        return Fields(data, what, [f.name for f in dataclasses.fields(cls)])  # type: ignore[arg-type]

    @classmethod
    def label(cls) -> str:
        """How error messages name this kind of object."""
        return f"{cls.__name__.lower()} record"

    @classmethod
    def from_json(cls, data: object) -> Self:
        """Parse and check the JSON form; :class:`MalformedInput` names the first bad field."""
        return cls.read(cls.fields_of(data, cls.label()))

    @classmethod
    @abstractmethod
    def read(cls, f: Fields) -> Self:
        """Build the record from checked fields."""


@dataclasses.dataclass(frozen=True)
class Account(JsonRecord):
    address: str
    name: str
    signing_key: bytes
    sealing_key: bytes
    balance: int
    stake: int
    nonce: int

    @property
    def key(self) -> str:
        return account_key(self.address)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.address("address"),
            f.text("name"),
            f.hex_bytes("signing_key"),
            f.hex_bytes("sealing_key"),
            f.integer("balance"),
            f.integer("stake"),
            f.integer("nonce"),
        )


@dataclasses.dataclass(frozen=True)
class Provider(JsonRecord):
    address: str
    name: str
    description: str

    @property
    def key(self) -> str:
        return provider_key(self.address)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.address("address"), f.text("name"), f.text("description", MAX_TEXT, empty=True))


@dataclasses.dataclass(frozen=True)
class MachineSpecs(JsonRecord):
    cpu_cores: int
    memory_gib: int
    gpus: tuple[str, ...]
    disk_gib: int

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.integer("cpu_cores", 1, 1 << 16),
            f.integer("memory_gib", 1, 1 << 24),
            f.strings("gpus", is_token, "a GPU model name", unique=False),
            f.integer("disk_gib", 0, 1 << 32),
        )


@dataclasses.dataclass(frozen=True)
class Machine(JsonRecord):
    machine_id: str
    provider: str
    platform: str
    region: str
    specs: MachineSpecs
    tcb_evidence: bytes
    loader_signing_key: bytes
    loader_sealing_key: bytes
    registered_at: int
    last_heartbeat: int
    active: bool
    attestation_digest: str
    """Digest of the attestation result the network's policy produced for ``tcb_evidence`` at registration."""
    attestation_verdict: Verdict
    """``trusted`` (hardware vendor roots) or ``simulated`` (accepted only because the policy allows simulation)."""

    BASE64 = frozenset({"tcb_evidence"})

    @property
    def key(self) -> str:
        return machine_key(self.machine_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.address("provider"),
            f.token("platform"),
            f.token("region"),
            f.record("specs", MachineSpecs),
            f.b64_bytes("tcb_evidence", MAX_TCB_EVIDENCE),
            f.hex_bytes("loader_signing_key"),
            f.hex_bytes("loader_sealing_key"),
            f.integer("registered_at"),
            f.integer("last_heartbeat"),
            f.flag("active"),
            f.digest("attestation_digest"),
            f.choice("attestation_verdict", VERDICTS),
        )


@dataclasses.dataclass(frozen=True)
class Challenge(JsonRecord):
    """A provider's outstanding attestation challenge: the nonce its next ``machine.register`` TCB must answer."""

    provider: str
    nonce: bytes
    issued_at: int
    used: bool

    @property
    def key(self) -> str:
        return challenge_key(self.provider)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(f.address("provider"), f.hex_bytes("nonce"), f.integer("issued_at"), f.flag("used"))


@dataclasses.dataclass(frozen=True)
class Pricing(JsonRecord):
    """What an offer costs. ``amount`` is units per hour (per_hour) or per order (fixed)."""

    model: PricingModel
    amount: int
    share_bps: int

    @classmethod
    def read(cls, f: Fields) -> Self:
        pricing = cls(f.choice("model", PRICING_MODELS), f.integer("amount"), f.integer("share_bps"))
        if pricing.model == REVENUE_SHARE:
            if pricing.amount != 0 or not 1 <= pricing.share_bps <= MAX_SHARE_BPS:
                raise MalformedInput(
                    f"{f.what}: revenue_share pricing takes share_bps from 1 to {MAX_SHARE_BPS} and amount 0"
                )
        elif pricing.share_bps != 0 or (pricing.amount == 0) != (pricing.model == FREE):
            raise MalformedInput(
                f"{f.what}: {pricing.model} pricing takes share_bps 0 and "
                + ("amount 0" if pricing.model == FREE else "an amount above 0")
            )
        return pricing

    def deposit(self, lease_hours: int, replicas: int) -> int:
        """The most an order can owe this offer: what it must escrow up front."""
        if self.model == PER_HOUR:
            return self.amount * lease_hours * replicas
        return self.amount if self.model == FIXED else 0

    def charge(self, usage_seconds: int) -> int:
        """What an order owes for ``usage_seconds`` (summed over its machines): per-hour prices pro-rated by the
        second (floored), fixed in full."""
        if self.model == PER_HOUR:
            return self.amount * usage_seconds // 3600
        return self.amount if self.model == FIXED else 0


@dataclasses.dataclass(frozen=True)
class Restrictions(JsonRecord):
    """Where and how an offer may be used; an empty tuple (or ``None``) means any."""

    platforms: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    engine_digests: tuple[str, ...] = ()
    max_lease_hours: int | None = None

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.strings("platforms", is_token, "a platform name"),
            f.strings("regions", is_token, "a region name"),
            f.strings("engine_digests", is_digest, "an engine digest"),
            f.optional(lambda name: f.integer(name, 1), "max_lease_hours"),
        )


OfferContent = tuple[str | None, str | None, int | None]
"""(content_digest, blob_uri, size): all set for content offers, all null for compute offers."""


def read_offer_terms(f: Fields) -> tuple[OfferKind, OfferContent, Pricing, tuple[str, ...]]:
    """The fields an offer record and an ``offer.create`` payload share, checked together.

    Content offers carry (digest, blob URI, size) and no machines; compute offers the reverse, and cannot be
    priced as a revenue share.
    """
    kind = f.choice("kind", OFFER_KINDS)
    content: OfferContent = (
        f.optional(f.digest, "content_digest"),
        f.optional(lambda name: f.text(name, MAX_URI), "blob_uri"),
        f.optional(f.integer, "size"),
    )
    pricing = f.record("pricing", Pricing)
    machine_ids = machine_ids_of(f)
    has_content = [value is not None for value in content]
    if kind == COMPUTE:
        if any(has_content) or not machine_ids:
            raise MalformedInput(
                f"{f.what}: a compute offer lists machine_ids and has null content_digest, blob_uri and size"
            )
        if pricing.model == REVENUE_SHARE:
            raise MalformedInput(f"{f.what}: compute offers are priced free, per_hour or fixed")
    elif not all(has_content) or machine_ids:
        raise MalformedInput(f"{f.what}: a {kind} offer needs content_digest, blob_uri and size, and no machine_ids")
    return kind, content, pricing, machine_ids


def machine_ids_of(f: Fields, name: str = "machine_ids") -> tuple[str, ...]:
    return f.strings(name, lambda v: is_record_id(v, MACHINE_ID_PREFIX), "a machine id")


@dataclasses.dataclass(frozen=True)
class Offer(JsonRecord):
    offer_id: str
    owner: str
    kind: OfferKind
    name: str
    description: str
    content_digest: str | None
    blob_uri: str | None
    size: int | None
    pricing: Pricing
    restrictions: Restrictions
    machine_ids: tuple[str, ...]
    created_at: int
    active: bool

    @property
    def key(self) -> str:
        return offer_key(self.offer_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        kind, (digest, uri, size), pricing, machine_ids = read_offer_terms(f)
        return cls(
            f.record_id("offer_id", OFFER_ID_PREFIX),
            f.address("owner"),
            kind,
            f.text("name"),
            f.text("description", MAX_TEXT, empty=True),
            digest,
            uri,
            size,
            pricing,
            f.record("restrictions", Restrictions),
            machine_ids,
            f.integer("created_at"),
            f.flag("active"),
        )


@dataclasses.dataclass(frozen=True)
class Order(JsonRecord):
    """A fine-tuning job, or a deployment (``kind`` inference) serving a model and adapters on ``replicas``.

    ``manifest_digest`` and ``delivery_uri`` are what the final machine's ``order.complete`` (or, for the
    delivery only, ``order.fail``) recorded: the provenance manifest's digest and where the signed delivery is.
    """

    order_id: str
    owner: str
    kind: OrderKind
    model_offer: str
    dataset_offers: tuple[str, ...]
    engine_offer: str
    compute_offer: str | None
    params: dict[str, Any]
    lease_hours: int
    replicas: int
    deposit: int
    escrow: int
    state: OrderState
    machines: tuple[str, ...]
    created_at: int
    started_at: int | None
    ended_at: int | None
    usage_seconds: int
    report_digest: str | None
    failure_reason: str | None
    adapter_offers: tuple[str, ...] = ()
    manifest_digest: str | None = None
    delivery_uri: str | None = None

    @property
    def key(self) -> str:
        return order_key(self.order_id)

    @property
    def content_offers(self) -> tuple[str, ...]:
        """Every offer whose content the order reads (and that must grant a key): model, datasets…, adapters…,
        engine (always last)."""
        return (self.model_offer, *self.dataset_offers, *self.adapter_offers, self.engine_offer)

    @classmethod
    def read(cls, f: Fields) -> Self:
        kind = f.choice("kind", ORDER_KINDS)
        model = f.record_id("model_offer", OFFER_ID_PREFIX)
        datasets, adapters = read_order_offers(f, kind, model)
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.address("owner"),
            kind,
            model,
            datasets,
            f.record_id("engine_offer", OFFER_ID_PREFIX),
            f.optional(lambda name: f.record_id(name, OFFER_ID_PREFIX), "compute_offer"),
            f.obj("params"),
            f.integer("lease_hours", 1),
            f.integer("replicas", 1),
            f.integer("deposit"),
            f.integer("escrow"),
            f.choice("state", ORDER_STATES),
            machine_ids_of(f, "machines"),
            f.integer("created_at"),
            f.optional(f.integer, "started_at"),
            f.optional(f.integer, "ended_at"),
            f.integer("usage_seconds"),
            f.optional(f.digest, "report_digest"),
            f.optional(lambda name: f.text(name, MAX_TEXT), "failure_reason"),
            adapters,
            f.optional(f.digest, "manifest_digest"),
            f.optional(lambda name: f.text(name, MAX_URI), "delivery_uri"),
        )


def offer_ids_of(f: Fields, name: str) -> tuple[str, ...]:
    """A list of distinct offer ids."""
    return f.strings(name, lambda v: is_record_id(v, OFFER_ID_PREFIX), "an offer id")


def read_order_offers(f: Fields, kind: OrderKind, model_offer: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(dataset_offers, adapter_offers)``, checked against the kind: a fine-tune reads at least one dataset and
    no adapter; a deployment reads no dataset and serves at most :data:`MAX_ADAPTERS` adapters (model-kind offers
    other than its base model)."""
    datasets = offer_ids_of(f, "dataset_offers")
    adapters = offer_ids_of(f, "adapter_offers")
    if kind == FINETUNE:
        if not datasets:
            f.fail("dataset_offers", "at least one offer id for a finetune order")
        if adapters:
            f.fail("adapter_offers", "empty for a finetune order (adapters are served by inference orders)")
    else:
        if datasets:
            f.fail("dataset_offers", "empty for an inference order (a deployment reads no dataset)")
        if len(adapters) > MAX_ADAPTERS or model_offer in adapters:
            f.fail("adapter_offers", f"at most {MAX_ADAPTERS} offer ids other than the model_offer")
    return datasets, adapters


@dataclasses.dataclass(frozen=True)
class DeploymentTerms:
    """What an inference order's ``params`` must say: the token price, the gateway, the default consensus mode.

    The gateway is the one account allowed to settle usage, open disputes and report timeouts for it.
    """

    price_per_1k_tokens: int
    gateway: str
    consensus: str | None

    PARAMS: ClassVar[tuple[str, ...]] = ("price_per_1k_tokens", "gateway", "consensus")

    @classmethod
    def of(cls, params: dict[str, Any]) -> Self:
        """Read the terms from an order's params (other keys are engine params); :class:`MalformedInput` if bad."""
        known = {name: params[name] for name in cls.PARAMS if name in params}
        known.setdefault("consensus", None)
        f = Fields(known, "inference order params", cls.PARAMS)
        return cls(
            f.integer("price_per_1k_tokens"),
            f.address("gateway"),
            f.optional(lambda name: f.text(name, MAX_NAME), "consensus"),
        )


@dataclasses.dataclass(frozen=True)
class KeyGrant(JsonRecord):
    """A content key sealed to one machine's attested loader for one order; the ledger only keeps bytes."""

    order_id: str
    offer_id: str
    machine_id: str
    owner: str
    sealed_key: bytes
    created_at: int

    BASE64 = frozenset({"sealed_key"})

    @property
    def key(self) -> str:
        return grant_key(self.order_id, self.offer_id, self.machine_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("offer_id", OFFER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.address("owner"),
            f.b64_bytes("sealed_key", MAX_SEALED_KEY),
            f.integer("created_at"),
        )


@dataclasses.dataclass(frozen=True)
class Refusal(JsonRecord):
    """A content owner's recorded "no" to releasing its key to one assigned machine, with the reason.

    The order stays ``pending_grants``: its owner may cancel for a full refund, and the content owner may still
    grant later (a refusal does not block a grant; a grant does block a refusal).
    """

    order_id: str
    offer_id: str
    machine_id: str
    owner: str
    reason: str
    created_at: int

    @property
    def key(self) -> str:
        return refusal_key(self.order_id, self.offer_id, self.machine_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("offer_id", OFFER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.address("owner"),
            f.text("reason", MAX_REASON),
            f.integer("created_at"),
        )


@dataclasses.dataclass(frozen=True)
class Checkpoint(JsonRecord):
    """An order's progress on one machine, so a fail-over resumes from it and pays that machine's provider.

    ``usage_seconds`` is what the provider metered on this machine; once the order is reassigned away from it
    the record is ``released`` and its usage is the share settled (capped by what was left of the lease). The
    released machines are the ones already tried for the order.
    """

    order_id: str
    machine_id: str
    compute_offer: str
    step: int
    usage_seconds: int
    checkpoint_digest: str | None
    released: bool
    updated_at: int
    notice_uri: str | None = None
    """Where the loader's signed checkpoint notice is (the checkpoint's key sealed to the order owner)."""

    @property
    def key(self) -> str:
        return checkpoint_key(self.order_id, self.machine_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.record_id("compute_offer", OFFER_ID_PREFIX),
            f.integer("step"),
            f.integer("usage_seconds"),
            f.optional(f.digest, "checkpoint_digest"),
            f.flag("released"),
            f.integer("updated_at"),
            f.optional(lambda name: f.text(name, MAX_URI), "notice_uri"),
        )


def latest_released(checkpoints: Iterable[Checkpoint]) -> Checkpoint | None:
    """The newest checkpoint (highest step) left behind by a machine an order was moved off, if any holds one:
    where a fine-tune resumes."""
    released = [c for c in checkpoints if c.released and c.checkpoint_digest is not None]
    return max(released, key=lambda c: c.step, default=None)


@dataclasses.dataclass(frozen=True)
class ResumeGrant(JsonRecord):
    """The order owner hands a fine-tune's latest released checkpoint to its replacement machine.

    ``sealed_key`` is the checkpoint's key sealed to the machine's attested loader (bound to order, checkpoint
    digest, machine and engine). The step and digest are pinned by the released :class:`Checkpoint`, whose
    notice (signed by the loader that wrote it) says where the ciphertext is; the new loader re-hashes it.
    """

    order_id: str
    machine_id: str
    checkpoint_digest: str
    sealed_key: bytes
    created_at: int

    BASE64 = frozenset({"sealed_key"})

    @property
    def key(self) -> str:
        return resume_grant_key(self.order_id, self.machine_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.digest("checkpoint_digest"),
            f.b64_bytes("sealed_key", MAX_SEALED_KEY),
            f.integer("created_at"),
        )


@dataclasses.dataclass(frozen=True)
class Endpoint(JsonRecord):
    """Where one replica of a deployment serves, and the deployment key it answers sealed requests with.

    ``key_signature`` is the machine's attested loader signing the statement of
    :func:`cloister.consensus.endpoint.endpoint_statement`, so a client trusts the key through the TCB, not
    through the provider. ``removed_at`` is set when the machine leaves the deployment (reassigned, or stopped):
    serving seconds run from ``registered_at`` to it.
    """

    order_id: str
    machine_id: str
    url: str
    deployment_key: bytes
    key_signature: bytes
    registered_at: int
    removed_at: int | None

    @property
    def key(self) -> str:
        return endpoint_key(self.order_id, self.machine_id)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.url("url"),
            f.hex_bytes("deployment_key"),
            f.hex_bytes("key_signature", SIGNATURE_SIZE),
            f.integer("registered_at"),
            f.optional(f.integer, "removed_at"),
        )


@dataclasses.dataclass(frozen=True)
class Credit(JsonRecord):
    """What one end user prepaid for one deployment: ``balance`` left, ``spent`` settled by the gateway so far."""

    order_id: str
    user: str
    balance: int
    spent: int
    updated_at: int

    @property
    def key(self) -> str:
        return credit_key(self.order_id, self.user)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.address("user"),
            f.integer("balance"),
            f.integer("spent"),
            f.integer("updated_at"),
        )


@dataclasses.dataclass(frozen=True)
class Dispute(JsonRecord):
    """Replicas committed different outputs for one request; the verdict, who was slashed and who rewarded.

    ``commitments`` are the signed commitments as the gateway sent them (``SignedCommitment.to_bytes()``), so
    anyone can re-check the verdict. ``output_digest`` is ``None`` when no output had a strict majority.
    """

    dispute_id: str
    order_id: str
    request_digest: str
    commitments: tuple[bytes, ...]
    output_digest: str | None
    slashed: tuple[str, ...]
    rewarded: tuple[str, ...]
    slashed_amount: int
    opened_by: str
    created_at: int

    BASE64 = frozenset({"commitments"})

    @property
    def key(self) -> str:
        return dispute_key(self.order_id, self.request_digest)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("dispute_id", DISPUTE_ID_PREFIX),
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.digest("request_digest"),
            f.b64_list("commitments", MAX_COMMITMENT, 2),
            f.optional(f.digest, "output_digest"),
            machine_ids_of(f, "slashed"),
            machine_ids_of(f, "rewarded"),
            f.integer("slashed_amount"),
            f.address("opened_by"),
            f.integer("created_at"),
        )


@dataclasses.dataclass(frozen=True)
class Timeout(JsonRecord):
    """A replica that did not commit in time for one request, and the stake its provider lost for it."""

    order_id: str
    machine_id: str
    request_digest: str
    amount: int
    created_at: int

    @property
    def key(self) -> str:
        return timeout_key(self.order_id, self.machine_id, self.request_digest)

    @classmethod
    def read(cls, f: Fields) -> Self:
        return cls(
            f.record_id("order_id", ORDER_ID_PREFIX),
            f.record_id("machine_id", MACHINE_ID_PREFIX),
            f.digest("request_digest"),
            f.integer("amount"),
            f.integer("created_at"),
        )
