"""The runner's OpenAI-compatible HTTP API as an OpenAI client meets it: the app served by
HttpServer on 127.0.0.1, forwarding with a real EngineClient to a fake engine listening on a
unix socket. The router is a stand-in that lends that engine and records what it was asked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from berth.common.http_server import HttpServer
from berth.models.domain import media_types
from berth.models.domain.artifact import Descriptor, Manifest
from berth.models.domain.catalog import ModelNotFound
from berth.models.domain.model_config import ModelConfig
from berth.models.engines.client import EngineClient
from berth.models.store.local import ModelView
from berth.models.transport.openai_http import openai_app
from tests.support.fake_engine import FakeEngine, fake_engine

ASKED = "ai/smollm2"
# The name the router gives the engine (the normalised reference).
NORMALISED = "ai/smollm2:latest"
UNTAGGED_ID = "sha256:" + "ab" * 32
WAIT_S = 10.0
CREATED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Lease:
    client: EngineClient
    model: str


@dataclass(frozen=True)
class Acquired:
    model: str
    backend: str | None
    embedding: bool
    keep_alive: timedelta | None


@dataclass
class FakeRouter:
    client: EngineClient
    calls: list[Acquired] = field(default_factory=list)
    in_use: int = 0
    released: int = 0

    @asynccontextmanager
    async def acquire(
        self, model: str, *, backend: str | None, embedding: bool, keep_alive: timedelta | None
    ) -> AsyncIterator[Lease]:
        self.calls.append(Acquired(model, backend, embedding, keep_alive))
        if model not in (ASKED, NORMALISED):
            raise ModelNotFound(model)
        self.in_use += 1
        try:
            yield Lease(self.client, NORMALISED)
        finally:
            self.in_use -= 1
            self.released += 1

    def list_models(self) -> list[ModelView]:
        return [_view("sha256:" + "12" * 32, [NORMALISED, "ai/smollm2:q4"]), _view(UNTAGGED_ID, [])]


def _view(model_id: str, tags: list[str]) -> ModelView:
    config = Descriptor(media_types.MODEL_CONFIG, "sha256:" + "00" * 32, 2)
    return ModelView(
        id=model_id,
        name=tags[0] if tags else "",
        tags=tags,
        created=CREATED,
        config=ModelConfig(format="gguf"),
        manifest=Manifest(config=config, layers=[]),
        manifest_size=0,
    )


@pytest.fixture
def engine(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[FakeEngine]:
    options = getattr(request, "param", {})
    with fake_engine(tmp_path / "engine.sock", **options) as running:
        yield running


@pytest.fixture
async def router(engine: FakeEngine) -> AsyncIterator[FakeRouter]:
    client = EngineClient(engine.socket)
    try:
        yield FakeRouter(client)
    finally:
        await client.aclose()


@pytest.fixture
async def base_url(router: FakeRouter) -> AsyncIterator[str]:
    server = HttpServer(openai_app(router), "127.0.0.1", 0)
    host, port = await server.start()
    try:
        yield f"http://{host}:{port}"
    finally:
        await server.stop()


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    async with _openai(base_url + "/v1") as opened:
        yield opened


def _openai(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)


async def eventually(check: Callable[[], Any], what: str) -> None:
    """Wait, without blocking the loop serving the requests, until check() is true."""
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")
        await asyncio.sleep(0.02)


HELLO = [{"role": "user", "content": "hello there"}]


async def test_lists_the_stored_models_by_their_first_tag(client: openai.AsyncOpenAI) -> None:
    models = [model async for model in client.models.list()]

    assert [(m.id, m.object, m.owned_by) for m in models] == [
        (NORMALISED, "model", "docker"),
        (UNTAGGED_ID, "model", "docker"),
    ]
    assert models[0].created == int(CREATED.timestamp())


async def test_retrieves_one_model_by_any_of_its_names(client: openai.AsyncOpenAI) -> None:
    assert (await client.models.retrieve(ASKED)).id == NORMALISED
    assert (await client.models.retrieve("ai/smollm2:q4")).id == "ai/smollm2:q4"
    assert (await client.models.retrieve(UNTAGGED_ID)).id == UNTAGGED_ID
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("ai/missing")


async def test_chat_answers_under_the_name_the_client_asked_for(
    client: openai.AsyncOpenAI, engine: FakeEngine, router: FakeRouter
) -> None:
    answer = await client.chat.completions.create(model=ASKED, messages=HELLO)

    assert answer.choices[0].message.content == "You said: hello there"
    assert answer.model == ASKED
    assert [body["model"] for body in engine.bodies("/v1/chat/completions")] == [NORMALISED]
    assert router.calls == [Acquired(ASKED, None, False, None)]
    assert (router.in_use, router.released) == (0, 1)


async def test_chat_streams_chunks_named_as_asked(
    client: openai.AsyncOpenAI, engine: FakeEngine, router: FakeRouter
) -> None:
    stream = await client.chat.completions.create(model=ASKED, messages=HELLO, stream=True)
    chunks = [chunk async for chunk in stream]

    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "You said: hello there"
    assert {chunk.model for chunk in chunks} == {ASKED}
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert engine.bodies("/v1/chat/completions")[0]["stream"] is True
    assert engine.completed_streams == 1
    # The lease is given back once the last byte is sent, a moment after the client has it.
    await eventually(lambda: (router.in_use, router.released) == (0, 1), "the lease back")


async def test_completions_streamed_or_not(
    client: openai.AsyncOpenAI, engine: FakeEngine, router: FakeRouter
) -> None:
    answer = await client.completions.create(model=ASKED, prompt="Once upon")
    stream = await client.completions.create(model=ASKED, prompt="a time", stream=True)
    chunks = [chunk async for chunk in stream]

    assert (answer.choices[0].text, answer.model) == ("You wrote: Once upon", ASKED)
    assert "".join(c.choices[0].text for c in chunks) == "You wrote: a time"
    assert {chunk.model for chunk in chunks} == {ASKED}
    assert [b["model"] for b in engine.bodies("/v1/completions")] == [NORMALISED, NORMALISED]
    await eventually(lambda: (router.in_use, router.released) == (0, 2), "the leases back")


async def test_embeddings_load_an_embedding_engine(
    client: openai.AsyncOpenAI, engine: FakeEngine, router: FakeRouter
) -> None:
    answer = await client.embeddings.create(model=ASKED, input=["ab", "abcd"])

    assert [item.embedding[0] for item in answer.data] == [2.0, 4.0]
    assert answer.model == ASKED
    assert router.calls == [Acquired(ASKED, None, True, None)]
    assert engine.bodies("/v1/embeddings")[0]["input"] == ["ab", "abcd"]


@pytest.mark.parametrize(
    ("prefix", "backend"), [("/engines", None), ("/engines/llama.cpp", "llama.cpp")]
)
async def test_engines_base_urls_choose_the_backend(
    base_url: str, router: FakeRouter, prefix: str, backend: str | None
) -> None:
    async with _openai(f"{base_url}{prefix}/v1") as client:
        answer = await client.chat.completions.create(model=ASKED, messages=HELLO)
        models = [model.id async for model in client.models.list()]

    assert answer.choices[0].message.content == "You said: hello there"
    assert router.calls == [Acquired(ASKED, backend, False, None)]
    assert models[0] == NORMALISED


async def test_an_unknown_backend_is_not_found(base_url: str, router: FakeRouter) -> None:
    async with _openai(f"{base_url}/engines/tgi/v1") as client:
        with pytest.raises(openai.NotFoundError) as raised:
            await client.chat.completions.create(model=ASKED, messages=HELLO)

    assert "tgi" in raised.value.message
    assert router.calls == []


async def test_an_unknown_model_is_not_found(
    client: openai.AsyncOpenAI, engine: FakeEngine
) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        await client.chat.completions.create(model="ai/missing", messages=HELLO)

    assert raised.value.code == "model_not_found"
    assert "ai/missing" in raised.value.message
    assert engine.received == []


async def test_bad_requests_get_openai_error_objects(base_url: str, router: FakeRouter) -> None:
    async with httpx2.AsyncClient(base_url=base_url) as http:
        not_json = await http.post("/v1/chat/completions", content=b"{not json")
        no_model = await http.post("/v1/chat/completions", json={"messages": HELLO})
        no_route = await http.get("/v1/nothing-here")

    assert not_json.status_code == 400
    assert not_json.json()["error"]["type"] == "invalid_request_error"
    assert set(not_json.json()["error"]) == {"message", "type", "param", "code"}
    assert no_model.status_code == 400
    assert no_model.json()["error"]["param"] == "model"
    assert no_route.status_code == 404
    assert "message" in no_route.json()["error"]
    assert router.calls == []


@pytest.mark.parametrize(
    ("keep_alive", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (30, timedelta(seconds=30)),
        ("0", timedelta(0)),
        ("-1", timedelta(seconds=-1)),
    ],
)
async def test_keep_alive_goes_to_the_router_not_the_engine(
    client: openai.AsyncOpenAI,
    engine: FakeEngine,
    router: FakeRouter,
    keep_alive: object,
    expected: timedelta,
) -> None:
    await client.chat.completions.create(
        model=ASKED, messages=HELLO, extra_body={"keep_alive": keep_alive}
    )

    assert router.calls[0].keep_alive == expected
    assert "keep_alive" not in engine.bodies("/v1/chat/completions")[0]


async def test_a_bad_keep_alive_is_refused(client: openai.AsyncOpenAI, router: FakeRouter) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(
            model=ASKED, messages=HELLO, extra_body={"keep_alive": "soon"}
        )

    assert raised.value.param == "keep_alive"
    assert router.calls == []


async def test_a_client_leaving_mid_stream_stops_the_engine_and_frees_it(
    client: openai.AsyncOpenAI, engine: FakeEngine, router: FakeRouter
) -> None:
    # Far more words than the test reads: the engine is still generating when it leaves.
    stream = await client.chat.completions.create(
        model=ASKED, messages=HELLO, stream=True, max_tokens=100_000
    )
    received = []
    async for chunk in stream:
        received.append(chunk.choices[0].delta.content)
        if len(received) == 3:
            break
    assert router.in_use == 1
    await stream.close()

    await eventually(lambda: engine.disconnects == 1, "the engine to see its client leave")
    await eventually(lambda: router.released == 1, "the lease to be given back")
    assert engine.completed_streams == 0
    assert router.in_use == 0


@pytest.mark.parametrize("engine", [{"cut_streams_after": 3}], indirect=True)
async def test_an_engine_failing_mid_stream_ends_the_stream_with_an_error(
    client: openai.AsyncOpenAI, router: FakeRouter
) -> None:
    stream = await client.chat.completions.create(model=ASKED, messages=HELLO, stream=True)
    received = []
    with pytest.raises(openai.APIError) as raised:
        async for chunk in stream:
            received.append(chunk)

    assert len(received) == 3
    assert "engine" in raised.value.message
    await eventually(lambda: (router.in_use, router.released) == (0, 1), "the lease back")


async def test_stopping_the_server_mid_stream_stops_the_engine_and_frees_it(
    engine: FakeEngine, router: FakeRouter
) -> None:
    server = HttpServer(openai_app(router), "127.0.0.1", 0, grace_s=0.2)
    host, port = await server.start()
    try:
        async with _openai(f"http://{host}:{port}/v1") as client:
            stream = await client.chat.completions.create(
                model=ASKED, messages=HELLO, stream=True, max_tokens=100_000
            )
            await anext(aiter(stream))
            await server.stop()
            with pytest.raises(openai.APIError):
                _ = [chunk async for chunk in stream]
    finally:
        await server.stop()

    await eventually(lambda: engine.disconnects == 1, "the engine to see the runner leave")
    assert (router.in_use, router.released) == (0, 1)


async def test_a_port_in_use_is_an_error_at_start(router: FakeRouter, base_url: str) -> None:
    port = int(base_url.rsplit(":", 1)[1])

    with pytest.raises(OSError):
        await HttpServer(openai_app(router), "127.0.0.1", port).start()
