"""The one normal form of an OpenAI chat completion request, so every replica hashes the same request the same way.

Replicas commit to :attr:`NormalizedRequest.digest` and the gateway seeds the selection with it, so two spellings of
one request (``0.70`` vs ``0.7``, ``max_tokens`` vs ``max_completion_tokens``, defaults left out or written) must
normalize to the same value. Numbers with a fraction become decimal strings: canonical JSON holds no floats.
Normalizing a normalized request (:meth:`NormalizedRequest.to_json`) gives it back unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from cloister.crypto.canonical import canonical_json
from cloister.crypto.digest import digest_bytes
from cloister.errors import InvalidRequest

ROLES: Final = ("system", "user", "assistant")
DEFAULT_MAX_TOKENS: Final = 128
MAX_TOKENS: Final = 4096
MAX_MESSAGES: Final = 512
MAX_STOP: Final = 4
MAX_STOP_LENGTH: Final = 256
MAX_MODEL: Final = 256
MIN_SEED: Final = -(1 << 63)
MAX_SEED: Final = (1 << 63) - 1
DECODING_PARAMS: Final = ("max_tokens", "temperature", "top_p", "seed", "stop")

_MAX_PLACES: Final = 12
_DECIMAL_RE = re.compile(rf"^(0|[1-9][0-9]{{0,8}})(\.[0-9]{{1,{_MAX_PLACES}}})?$")
_CONTENT_PART_KEYS: Final = frozenset({"type", "text"})
_NEUTRAL: Final[Mapping[str, object]] = {"n": 1, "presence_penalty": 0, "frequency_penalty": 0, "logprobs": False}
"""Accepted OpenAI fields that change nothing at these values; any other value asks for what we do not do."""
_IGNORED: Final = frozenset({"user", "stream_options"})
"""Accepted OpenAI fields that do not change the output (who asks; how usage is streamed)."""
_KNOWN: Final = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stream", "stop"}
)


@dataclass(frozen=True)
class Message:
    role: str
    content: str

    def to_json(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class NormalizedRequest:
    """A checked chat request; ``temperature`` and ``top_p`` are decimal strings like ``"0.7"``."""

    model: str
    messages: tuple[Message, ...]
    max_tokens: int
    temperature: str
    top_p: str
    seed: int
    stream: bool
    stop: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """Canonical-JSON-safe normal form; it is also a request :func:`normalize_request` accepts."""
        return {
            "model": self.model,
            "messages": [message.to_json() for message in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stream": self.stream,
            "stop": list(self.stop),
        }

    def to_openai(self) -> dict[str, Any]:
        """The same request in OpenAI's own types (numbers as numbers), for an engine that speaks OpenAI."""
        body = self.to_json()
        body["temperature"] = float(self.temperature)
        body["top_p"] = float(self.top_p)
        return body

    @property
    def digest(self) -> str:
        """What replicas commit to: everything but ``stream``, which changes the framing, not the output."""
        body = self.to_json()
        del body["stream"]
        return digest_bytes(canonical_json(body))

    @property
    def params_digest(self) -> str:
        """Digest of the decoding parameters alone."""
        body = self.to_json()
        return digest_bytes(canonical_json({name: body[name] for name in DECODING_PARAMS}))


def normalize_request(body: Mapping[str, Any]) -> NormalizedRequest:
    """Check an OpenAI chat completion request and return its normal form; raise :class:`InvalidRequest`."""
    if not isinstance(body, Mapping):
        raise InvalidRequest("the request body must be a JSON object", param=None)
    _check_fields(body)
    # An explicit ``null`` means "not given", as in OpenAI's API: ``body.get`` reads both the same way.
    request = NormalizedRequest(
        model=_model(body.get("model")),
        messages=_messages(body.get("messages")),
        max_tokens=_max_tokens(body),
        temperature=_fraction(body.get("temperature"), "temperature", "0", high=Decimal(2), zero_allowed=True),
        top_p=_fraction(body.get("top_p"), "top_p", "1", high=Decimal(1), zero_allowed=False),
        seed=_seed(body.get("seed")),
        stream=_stream(body.get("stream")),
        stop=_stop(body.get("stop")),
    )
    try:
        canonical_json(request.to_json())
    except UnicodeEncodeError:
        raise InvalidRequest("the request holds text that is not valid Unicode (a lone surrogate)") from None
    return request


def _check_fields(body: Mapping[str, Any]) -> None:
    for name, value in body.items():
        if name in _KNOWN or name in _IGNORED or value is None:
            continue
        if name in _NEUTRAL:
            neutral = _NEUTRAL[name]
            if value != neutral or isinstance(value, bool) != isinstance(neutral, bool):
                raise InvalidRequest(
                    f"{name}={value!r:.40} is not supported by this deployment; leave it out", param=name
                )
            continue
        raise InvalidRequest(f"unknown or unsupported request field {name!r:.60}; leave it out", param=name)


def _model(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_MODEL:
        raise InvalidRequest("model must name the deployment (its order id), as text", param="model")
    return value


def _messages(value: object) -> tuple[Message, ...]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_MESSAGES:
        raise InvalidRequest(f"messages must be a list of 1 to {MAX_MESSAGES} messages", param="messages")
    return tuple(_message(item, f"messages[{index}]") for index, item in enumerate(value))


def _message(item: object, where: str) -> Message:
    if not isinstance(item, Mapping) or set(item) - {"role", "content"}:
        raise InvalidRequest(f"{where} must be an object with only role and content", param=where)
    role = item.get("role")
    if role not in ROLES:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
    return Message(str(role), _content(item.get("content"), f"{where}.content"))


def _content(value: object, where: str) -> str:
    """Text, or OpenAI's list of text parts (joined): the two spellings of one prompt."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(_is_text_part(part) for part in value):
        text = "".join(part["text"] for part in value)
    else:
        raise InvalidRequest(f"{where} must be text (or a list of text parts)", param=where)
    return text


def _is_text_part(part: object) -> bool:
    return (
        isinstance(part, Mapping)
        and set(part) == _CONTENT_PART_KEYS
        and part["type"] == "text"
        and isinstance(part["text"], str)
    )


def _max_tokens(body: Mapping[str, Any]) -> int:
    values: dict[str, int] = {}
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TOKENS:
            raise InvalidRequest(f"{name} must be an integer from 1 to {MAX_TOKENS}", param=name)
        values[name] = value
    if len(set(values.values())) > 1:
        raise InvalidRequest(
            "max_tokens and max_completion_tokens disagree; give only one", param="max_completion_tokens"
        )
    return next(iter(values.values()), DEFAULT_MAX_TOKENS)


def _fraction(value: object, name: str, default: str, *, high: Decimal, zero_allowed: bool) -> str:
    """A number from 0 to ``high`` as its shortest decimal string; a normalized decimal string is accepted back."""
    if value is None:
        return default
    number = _decimal(value)
    if number is None or number < 0 or (number == 0 and not zero_allowed) or number > high:
        lowest = "from 0" if zero_allowed else "above 0"
        raise InvalidRequest(f"{name} must be a number {lowest} up to {high}", param=name)
    text = format(number.normalize(), "f")
    if not _DECIMAL_RE.match(text):
        raise InvalidRequest(f"{name} has more than {_MAX_PLACES} decimal places; round it", param=name)
    return text


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value)) if math.isfinite(value) else None
    if isinstance(value, str) and _DECIMAL_RE.match(value):
        return Decimal(value)
    return None


def _seed(value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_SEED <= value <= MAX_SEED:
        raise InvalidRequest("seed must be a 64-bit integer", param="seed")
    return value


def _stream(value: object) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest("stream must be true or false", param="stream")
    return value


def _stop(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if (
        not isinstance(stops, list)
        or len(stops) > MAX_STOP
        or not all(isinstance(s, str) and 0 < len(s) <= MAX_STOP_LENGTH for s in stops)
    ):
        raise InvalidRequest(
            f"stop must be a string or a list of at most {MAX_STOP} non-empty strings "
            f"of at most {MAX_STOP_LENGTH} characters",
            param="stop",
        )
    return tuple(stops)
