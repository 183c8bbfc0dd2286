"""Request normalization: one normal form per request, refusals that name the bad field."""

from __future__ import annotations

from typing import Any

import pytest

from cloister.consensus.requests import DEFAULT_MAX_TOKENS, NormalizedRequest, normalize_request
from cloister.crypto.canonical import canonical_json
from cloister.errors import InvalidRequest

BASE: dict[str, Any] = {"model": "or-1", "messages": [{"role": "user", "content": "hi"}]}


def norm(**fields: Any) -> NormalizedRequest:
    return normalize_request({**BASE, **fields})


def test_defaults_are_filled_in() -> None:
    request = normalize_request(BASE)
    assert request.to_json() == {
        "model": "or-1",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": DEFAULT_MAX_TOKENS,
        "temperature": "0",
        "top_p": "1",
        "seed": 0,
        "stream": False,
        "stop": [],
    }
    canonical_json(request.to_json())  # no floats anywhere


@pytest.mark.parametrize(
    "spelling",
    [
        {"temperature": 0.7},
        {"temperature": 0.70},
        {"temperature": "0.7"},
        {"temperature": "0.700"},
        {"temperature": 0.7, "max_tokens": 128},
        {"temperature": 0.7, "max_completion_tokens": 128},
        {"temperature": 0.7, "max_tokens": 128, "max_completion_tokens": 128},
        {"temperature": 0.7, "top_p": 1, "seed": 0, "stop": None, "user": "alice", "n": 1},
        {"temperature": 0.7, "top_p": 1.0, "seed": None, "presence_penalty": 0.0, "logprobs": False},
        {"temperature": 0.7, "stream": True},
        {"temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}},
    ],
)
def test_spellings_of_one_request_have_one_digest(spelling: dict[str, Any]) -> None:
    assert norm(**spelling).digest == norm(temperature=0.7).digest
    assert norm(**spelling).temperature == "0.7"


def test_text_parts_and_stop_spellings_are_the_same_request() -> None:
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    assert normalize_request({**BASE, "messages": [{"role": "user", "content": parts}]}).digest == norm().digest
    assert norm(stop="END").digest == norm(stop=["END"]).digest
    assert norm(stop="END").stop == ("END",)


def test_stream_changes_the_framing_not_the_digest() -> None:
    streamed, whole = norm(stream=True), norm(stream=False)
    assert streamed.digest == whole.digest and streamed.params_digest == whole.params_digest
    assert streamed.to_json() != whole.to_json()


def test_what_changes_the_output_changes_the_digest() -> None:
    base = norm()
    for changed in (norm(temperature=1), norm(seed=7), norm(top_p=0.5), norm(max_tokens=5), norm(stop=["x"])):
        assert changed.digest != base.digest and changed.params_digest != base.params_digest
    other_prompt = normalize_request({**BASE, "messages": [{"role": "user", "content": "hello"}]})
    assert other_prompt.digest != base.digest and other_prompt.params_digest == base.params_digest
    other_role = normalize_request({**BASE, "messages": [{"role": "system", "content": "hi"}]})
    assert other_role.digest != base.digest


def test_normal_form_is_a_fixed_point_and_openai_form_has_numbers() -> None:
    request = norm(temperature=1.25, top_p=0.9, seed=-5, stop=["a", "b"], max_completion_tokens=7, stream=True)
    assert normalize_request(request.to_json()) == request
    assert normalize_request(request.to_openai()) == request
    openai = request.to_openai()
    assert openai["temperature"] == 1.25 and openai["top_p"] == 0.9 and openai["max_tokens"] == 7


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"model": None}, "model"),
        ({"model": ""}, "model"),
        ({"model": 7}, "model"),
        ({"messages": None}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "x"}]}, "messages[1].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": "x", "name": "bob"}]}, "messages[0]"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 4097}, "max_tokens"),
        ({"max_tokens": 1.5}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"max_completion_tokens": "10"}, "max_completion_tokens"),
        ({"max_tokens": 10, "max_completion_tokens": 11}, "max_completion_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": 2.01}, "temperature"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": "1e-1"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": 1e-20}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.1}, "top_p"),
        ({"seed": 1.0}, "seed"),
        ({"seed": 1 << 63}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": [1]}, "stop"),
        ({"stop": "x" * 257}, "stop"),
        ({"n": 2}, "n"),
        ({"n": True}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_bad_fields_are_refused_naming_the_param(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        normalize_request({**BASE, **fields})
    assert caught.value.param == param and caught.value.http_status == 400
    assert caught.value.to_json()["error"]["details"]["param"] == param


def test_not_an_object_and_invalid_unicode_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        normalize_request(["not", "an", "object"])  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="Unicode"):
        normalize_request({**BASE, "messages": [{"role": "user", "content": "\ud800"}]})


def test_many_messages_keep_their_order() -> None:
    messages = [{"role": ("user", "assistant")[i % 2], "content": str(i)} for i in range(10)]
    request = normalize_request({**BASE, "messages": messages})
    assert [m.content for m in request.messages] == [str(i) for i in range(10)]
    reordered = normalize_request({**BASE, "messages": messages[::-1]})
    assert reordered.digest != request.digest
