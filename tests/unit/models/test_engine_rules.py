"""The runner's plain rules: which backend serves a model, keep-alive, eviction, and the
OpenAI bodies sent to engines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from berth.common.errors import FailedPrecondition
from berth.models.domain.engines import (
    DEFAULT_KEEP_ALIVE,
    LLAMA_CPP,
    VLLM,
    EngineKey,
    EngineState,
    EngineUse,
    choose_backend,
    eviction_candidate,
    keep_alive_for,
)
from berth.models.runner import openai

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_the_format_picks_the_backend_unless_one_is_asked() -> None:
    assert choose_backend("ai/x", "gguf", None) == LLAMA_CPP
    assert choose_backend("ai/x", "safetensors", None) == VLLM
    assert choose_backend("ai/x", "gguf", LLAMA_CPP) == LLAMA_CPP
    with pytest.raises(FailedPrecondition) as refused:
        choose_backend("ai/x", "gguf", VLLM)
    assert refused.value.reason == "UNSUPPORTED_FORMAT" and "vllm" in refused.value.message
    with pytest.raises(FailedPrecondition):
        choose_backend("ai/x", "dduf", None)


def test_keep_alive_follows_the_request_else_stays() -> None:
    five = timedelta(minutes=5)
    assert keep_alive_for(None, None, five) == five
    assert keep_alive_for(None, timedelta(seconds=30), five) == timedelta(seconds=30)
    assert keep_alive_for(timedelta(0), five, five) == timedelta(0)
    assert keep_alive_for(timedelta(seconds=-1), five, five) is None  # never unloads
    # berth-modeld --keep-alive -1: the default is never.
    assert keep_alive_for(None, None, None) is None


def _use(last_used: datetime, **changes: object) -> EngineUse:
    use = EngineUse(EngineKey("sha256:" + "a" * 64, LLAMA_CPP), NOW, last_used)
    use.state = EngineState.READY
    for name, value in changes.items():
        setattr(use, name, value)
    return use


def test_an_idle_engine_expires_after_its_keep_alive_and_a_busy_one_never() -> None:
    idle = _use(NOW)
    assert idle.expires_at() == NOW + DEFAULT_KEEP_ALIVE
    assert not idle.expired(NOW + timedelta(minutes=4))
    assert idle.expired(NOW + DEFAULT_KEEP_ALIVE)
    assert _use(NOW, active_requests=1).expires_at() is None
    assert _use(NOW, keep_alive=None).expires_at() is None
    assert _use(NOW, state=EngineState.LOADING).expires_at() is None


def test_the_least_recently_used_idle_engine_makes_room() -> None:
    old, newer = _use(NOW - timedelta(minutes=2)), _use(NOW - timedelta(minutes=1))
    busy_oldest = _use(NOW - timedelta(minutes=9), active_requests=2)
    assert eviction_candidate([newer, busy_oldest, old]) is old
    assert eviction_candidate([busy_oldest]) is None


def test_sampling_sends_only_what_was_set_in_each_engines_words() -> None:
    sampling = openai.Sampling(temperature=0.0, max_tokens=5, stop=["\n"], repetition_penalty=1.1)
    assert openai.sampling_fields(sampling, LLAMA_CPP) == {
        "temperature": 0.0,
        "max_tokens": 5,
        "stop": ["\n"],
        "repeat_penalty": 1.1,
    }
    assert openai.sampling_fields(sampling, VLLM)["repetition_penalty"] == 1.1
    assert openai.sampling_fields(openai.Sampling(), LLAMA_CPP) == {}


def test_chunks_and_whole_answers_read_the_same() -> None:
    chunk = {"choices": [{"delta": {"content": "Par"}, "finish_reason": None}]}
    assert openai.read_chunk(chunk, chat=True).text == "Par"
    whole = {
        "choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3},
    }
    read = openai.read_chunk(whole, chat=True)
    assert (read.text, read.finish_reason, read.usage) == ("Paris.", "stop", (12, 3))
    text = openai.read_chunk({"choices": [{"text": " Paris", "finish_reason": "length"}]}, False)
    assert (text.text, text.finish_reason) == (" Paris", "length")
