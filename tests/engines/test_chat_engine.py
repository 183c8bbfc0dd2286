"""The chat inference engine as the loader runs it (separate process, job.json), on the tiny random model.

OpenAI response shapes, streaming that adds up to the plain answer, decoding that is the same in every process,
seeds, stop strings, adapters, and OpenAI error bodies for bad requests.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from cloister.engines.bundle import builtin_engine
from cloister.engines.job import JobSpec, read_progress
from cloister.engines.runner import run_engine, start_engine
from cloister.errors import EngineFailed, InvalidRequest

ENGINE = builtin_engine("chat_inference")
QUESTION = "How do I stop the devnet?"


def _job(root: Path, model: Path, adapters: tuple[Path, ...] = (), **params: Any) -> tuple[Path, JobSpec]:
    workspace = root / "workspace"
    workspace.mkdir(parents=True, mode=0o700)
    inputs = {"model": (model,), **({"adapters": adapters} if adapters else {})}
    job = JobSpec(inputs, params, workspace / "out", workspace / "ckpt", workspace / "progress.jsonl")
    return workspace, job


@contextmanager
def serving(root: Path, model: Path, adapters: tuple[Path, ...] = ()) -> Iterator[httpx.Client]:
    """An engine process on a free port; a client for it once it has announced it is ready."""
    workspace, job = _job(root, model, adapters)
    with start_engine(ENGINE, job, workspace=workspace, threads=1) as process:
        while not (ready := [e for e in read_progress(job.progress_file) if e.get("ready")]):
            assert process.running(), (workspace / "engine.log").read_text()
            time.sleep(0.1)
        with httpx.Client(base_url=f"http://127.0.0.1:{ready[0]['port']}", timeout=120) as client:
            yield client


@pytest.fixture(scope="module")
def engine(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    with serving(tmp_path_factory.mktemp("engine"), tiny_model) as client:
        yield client


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16, **extra}


def _complete(client: httpx.Client, **extra: Any) -> dict[str, Any]:
    response = client.post("/v1/chat/completions", json=_chat(**extra))
    assert response.status_code == 200, response.text
    return dict(response.json())


def _stream(client: httpx.Client, **extra: Any) -> list[dict[str, Any]]:
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True, **extra)) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in lines)
    return [json.loads(line[6:]) for line in lines[:-1]]


def _text(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


def _ids(body: dict[str, Any]) -> list[int]:
    return list(body["cloister"]["token_ids"])


# --- shapes ------------------------------------------------------------------------------------------------------


def test_health_models_and_an_openai_chat_completion(engine: httpx.Client, tiny_model: Path) -> None:
    assert engine.get("/health").json() == {"status": "ok", "model": "tiny-llama", "context": 512, "vocab_size": 512}
    assert engine.get("/v1/models").json() == {
        "object": "list",
        "data": [{"id": "tiny-llama", "object": "model", "created": 0, "owned_by": "cloister"}],
    }
    body = _complete(engine, max_tokens=9)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-") and body["model"] == "tiny-llama"
    assert isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant" and isinstance(_text(body), str)
    ids = _ids(body)
    assert body["usage"]["completion_tokens"] == len(ids) <= 9
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + len(ids)
    assert body["cloister"]["prompt_tokens"] == body["usage"]["prompt_tokens"] > 5
    assert choice["finish_reason"] == ("length" if len(ids) == 9 and ids[-1] != 2 else "stop")
    assert engine.post("/v1/detokenize", json={"token_ids": ids}).json()["text"].startswith(_text(body))


def test_streamed_chunks_add_up_to_the_plain_answer(engine: httpx.Client) -> None:
    for decoding in ({}, {"temperature": 1.3, "seed": 4}):
        plain = _complete(engine, **decoding)
        chunks = _stream(engine, **decoding)
        assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
        last = chunks[-1]
        assert text == _text(plain)
        assert last["cloister"] == plain["cloister"] and last["usage"] == plain["usage"]
        assert last["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
        assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)


# --- decoding ----------------------------------------------------------------------------------------------------


def test_seeds_choose_the_sample_and_greedy_ignores_them(engine: httpx.Client) -> None:
    greedy = {_tuple(_complete(engine, seed=seed)) for seed in (1, 2)}
    assert len(greedy) == 1
    sampled = [_tuple(_complete(engine, temperature=1, seed=seed)) for seed in (0, 1, 2, 0)]
    assert sampled[0] == sampled[3]
    assert len(set(sampled)) == 3
    narrow = _tuple(_complete(engine, temperature=1, top_p=0.000001, seed=9))
    assert narrow == greedy.pop(), "top_p that keeps one token is greedy"


def _tuple(body: dict[str, Any]) -> tuple[int, ...]:
    return tuple(_ids(body))


def test_a_stop_string_ends_the_answer_before_it(engine: httpx.Client) -> None:
    text = _text(_complete(engine, max_tokens=40))
    start = next(i for i in range(len(text) // 2, len(text) - 2) if text.find(text[i : i + 2]) == i)
    stop = text[start : start + 2]
    stopped = _complete(engine, max_tokens=40, stop=[stop, "never appears"])
    assert _text(stopped) == text[:start] and stopped["choices"][0]["finish_reason"] == "stop"
    chunks = _stream(engine, max_tokens=40, stop=stop)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == text[:start]


def test_another_process_decodes_the_same_tokens(engine: httpx.Client, tiny_model: Path, tmp_path: Path) -> None:
    requests = [{}, {"temperature": 0.8, "top_p": 0.9, "seed": 77}]
    with serving(tmp_path, tiny_model) as second:
        for extra in requests:
            assert _ids(_complete(second, **extra)) == _ids(_complete(engine, **extra))


def _adapter(tiny_model: Path, dest: Path) -> Path:
    """A LoRA adapter with random (non-zero) weights, saved the way PEFT and the fine-tuning engine save them."""
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(dest))
    return dest


def test_an_adapter_changes_the_answer(engine: httpx.Client, tiny_model: Path, tmp_path: Path) -> None:
    adapter = _adapter(tiny_model, tmp_path / "adapter")
    with serving(tmp_path / "tuned", tiny_model, (adapter,)) as tuned:
        assert _ids(_complete(tuned, max_tokens=12)) != _ids(_complete(engine, max_tokens=12))


def test_a_job_with_a_broken_adapter_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    not_an_adapter = tmp_path / "adapter"
    not_an_adapter.mkdir()
    (not_an_adapter / "weights.bin").write_bytes(b"\0" * 16)
    workspace, job = _job(tmp_path, tiny_model, (not_an_adapter,))
    with pytest.raises(EngineFailed, match=r"error\[engine_job_invalid\].*not a PEFT adapter folder"):
        run_engine(ENGINE, job, workspace=workspace, timeout=120, threads=1)


# --- bad requests ------------------------------------------------------------------------------------------------


def _error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return dict(error)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": 500, "messages": [{"role": "user", "content": "word " * 200}]}, "messages"),
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"messages": "hi"}, "messages"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"n": 2}, "n"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_invalid_requests_get_an_openai_error_naming_the_field(
    engine: httpx.Client, change: dict[str, Any], param: str
) -> None:
    error = _error(engine.post("/v1/chat/completions", json={**_chat(), **change}), 400)
    assert (error["type"], error["param"]) == ("invalid_request_error", param)


def test_malformed_truncated_and_oversized_bodies_are_refused(engine: httpx.Client) -> None:
    good = json.dumps(_chat()).encode()
    for raw in (b"", b"[1, 2", good[:-1], good[: len(good) // 2], b'{"model": "a", "model": "b"}', b"\xff\xfe"):
        assert _error(engine.post("/v1/chat/completions", content=raw), 400)["code"] in (
            "bad_request",
            "invalid_request",
        )
    assert _error(engine.post("/v1/chat/completions", content=b" " * (2 << 20)), 413)["code"] == "payload_too_large"
    assert _error(engine.post("/v1/detokenize", json={"token_ids": [512]}), 400)["param"] == "token_ids"
    assert _error(engine.post("/v1/detokenize", json={"token_ids": "1"}), 400)["param"] == "token_ids"
    assert _error(engine.get("/v1/chat/completions"), 405)["type"] == "invalid_request_error"
    assert _error(engine.get("/v2/everything"), 404)["type"] == "invalid_request_error"


def test_messages_the_chat_template_refuses_are_an_invalid_request(tiny_model: Path, tmp_path: Path) -> None:
    from cloister.engines.chat_inference.chat_engine.config import ServeConfig
    from cloister.engines.chat_inference.chat_engine.decode import prompt_ids
    from cloister.engines.chat_inference.chat_engine.model import load

    strict = tmp_path / "strict"
    shutil.copytree(tiny_model, strict)
    config_file = strict / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    rule = "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('start with a user message') }}{% endif %}"
    template = config.get("chat_template") or (strict / "chat_template.jinja").read_text()
    config["chat_template"] = rule + template
    config_file.write_text(json.dumps(config))
    (strict / "chat_template.jinja").unlink(missing_ok=True)
    loaded = load(ServeConfig(strict, (), 0, 1, 0))
    assert prompt_ids(loaded, [{"role": "user", "content": "hi"}])
    with pytest.raises(InvalidRequest, match="start with a user message") as caught:
        prompt_ids(loaded, [{"role": "assistant", "content": "hi"}])
    assert caught.value.param == "messages"
