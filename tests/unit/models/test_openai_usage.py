"""The usage at the end of a stream that asked for it (`stream_options.include_usage`), as
llama.cpp's engine and vLLM send it: every chunk but the last has `"usage": null`, the last has
no choices."""

from __future__ import annotations

from berth.models.domain.engines import LLAMA_CPP
from berth.models.runner import openai


def test_bodies_ask_engines_for_the_usage_of_a_stream() -> None:
    chat = openai.chat_body("m", [("user", "hi")], openai.Sampling(), LLAMA_CPP)
    completion = openai.completion_body("m", "hi", openai.Sampling(), LLAMA_CPP)
    for body in (chat, completion):
        assert body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}


def test_only_the_last_chunk_carries_the_usage() -> None:
    text = {"choices": [{"delta": {"content": "Paris"}, "finish_reason": None}], "usage": None}
    last = {
        "choices": [],
        "usage": {"prompt_tokens": 27, "completion_tokens": 7, "total_tokens": 34},
    }
    assert openai.read_chunk(text, chat=True) == openai.Delta(text="Paris")
    assert openai.read_chunk(last, chat=True) == openai.Delta(usage=(27, 7))
