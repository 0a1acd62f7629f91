"""The aggregated MCP endpoint of berth-mcpd with real clients in front and real servers
behind: the official SDK's client over stdio (`berth mcp gateway run`), SSE and streamable
HTTP, against mcp-server-time, mcp-server-git and the reference `everything` server."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import types
from mcp.client.session import ClientRequestContext

from tests.integration.mcp.test_tools_cli import ok
from tests.support.mcp import (
    GATEWAY_TRANSPORTS,
    NODE_BIN,
    GatewayAddress,
    Inbox,
    client_session,
    gateway_address,
    gateway_streams,
    import_test_catalog,
    server_streams,
)
from tests.support.processes import BIN
from tests.support.stack import Stack

EVERYTHING = "everything-local"
SERVERS = ["time", "git", EVERYTHING]
# How each server runs when a client starts it itself, without berth.
DIRECT = {
    "time": BIN / "mcp-server-time",
    "git": BIN / "mcp-server-git",
    EVERYTHING: NODE_BIN / "mcp-server-everything",
}
PARIS_NOON = {"source_timezone": "Europe/Paris", "time": "12:00", "target_timezone": "Asia/Tokyo"}
SAMPLED = "Berth relayed this answer."
STATIC_DOCUMENT = "demo://resource/static/document/features.md"
TEXT_TEMPLATE = "demo://resource/dynamic/text/{resourceId}"
LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")

pytestmark = pytest.mark.parametrize("transport", GATEWAY_TRANSPORTS)
# Subscriptions and logging are what the 2025-11-25 protocol (the servers' and berth's) has;
# the SDK warns that later protocol versions replace them.
OLD_PROTOCOL = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def catalog_imported(stack: Stack) -> None:
    """The catalog with `everything-local` (the reference server from node_modules)."""
    with stack.channel() as channel:
        import_test_catalog(channel)


@pytest.fixture(scope="module", autouse=True)
def enabled(stack: Stack, catalog_imported: None) -> Iterator[None]:
    """time, git and everything-local enabled, and nothing else (shared stack); no test
    here changes that."""
    ok(stack, "mcp", "server", "reset")
    ok(stack, "mcp", "server", "enable", *SERVERS)
    yield
    ok(stack, "mcp", "server", "reset")


@pytest.fixture(scope="module")
def address(stack: Stack) -> GatewayAddress:
    with stack.channel() as channel:
        return gateway_address(stack.socket, channel)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git repository with two commits and an untracked file."""
    path = tmp_path_factory.mktemp("repo")
    identity = {
        "GIT_AUTHOR_NAME": "Ada",
        "GIT_AUTHOR_EMAIL": "ada@example.com",
        "GIT_COMMITTER_NAME": "Ada",
        "GIT_COMMITTER_EMAIL": "ada@example.com",
        "GIT_AUTHOR_DATE": "2024-05-01T12:00:00Z",
        "GIT_COMMITTER_DATE": "2024-05-01T12:00:00Z",
        "HOME": str(path),
        "PATH": "/usr/bin:/bin",
    }

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=path, env=identity, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    (path / "README.md").write_text("berth\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "First commit")
    (path / "README.md").write_text("berth, the gateway\n")
    git("commit", "-q", "-am", "Say what berth is")
    (path / "notes.txt").write_text("not added\n")
    return path


def calls(repo: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Deterministic calls of each server's tools: (server, tool, arguments)."""
    return [
        ("time", "convert_time", PARIS_NOON),
        (EVERYTHING, "echo", {"message": "hello through berth"}),
        (EVERYTHING, "get-sum", {"a": 2, "b": 40}),
        ("git", "git_status", {"repo_path": str(repo)}),
        ("git", "git_log", {"repo_path": str(repo), "max_count": 5}),
    ]


def dump(item: Any) -> Any:
    return item.model_dump(mode="json", by_alias=True, exclude_none=True)


def by_name(items: list[Any]) -> list[Any]:
    return sorted((dump(item) for item in items), key=lambda d: d.get("name") or d.get("uri"))


def text_of(result: types.CallToolResult | types.GetPromptResult) -> str:
    if isinstance(result, types.GetPromptResult):
        contents = [message.content for message in result.messages]
    else:
        contents = list(result.content)
    return "\n".join(c.text for c in contents if isinstance(c, types.TextContent))


async def sample(
    context: ClientRequestContext, params: types.CreateMessageRequestParams
) -> types.CreateMessageResult:
    """A client's "LLM": always the same answer, after the prompt it was given."""
    (message,) = params.messages
    assert isinstance(message.content, types.TextContent)
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"{SAMPLED} ({message.content.text})"),
        model="berth-test-model",
        stop_reason="endTurn",
    )


async def elicit(
    context: ClientRequestContext, params: types.ElicitRequestParams
) -> types.ElicitResult:
    """A client's user: fills in the form's name and agrees."""
    assert "name" in params.requested_schema["properties"]
    return types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True})


# -- what the servers answer a client that starts them itself -----------------------------


@pytest.fixture(scope="module")
def direct(repo: Path) -> dict[str, Any]:
    """Each server's lists and the calls' results, through the same SDK client, no berth."""

    async def ask(server: str) -> dict[str, Any]:
        async with (
            server_streams(DIRECT[server]) as streams,
            client_session(streams) as session,
        ):
            answers: dict[str, Any] = {"tools": (await session.list_tools()).tools}
            capabilities = session.server_capabilities
            assert capabilities is not None
            if capabilities.prompts:
                answers["prompts"] = (await session.list_prompts()).prompts
            if capabilities.resources:
                answers["resources"] = (await session.list_resources()).resources
                templates = await session.list_resource_templates()
                answers["templates"] = templates.resource_templates
            if server == EVERYTHING:
                answers["document"] = dump(await session.read_resource(STATIC_DOCUMENT))
            for owner, tool, arguments in calls(repo):
                if owner == server:
                    answers[tool] = dump(await session.call_tool(tool, arguments))
            return answers

    async def ask_all() -> dict[str, dict[str, Any]]:
        return dict(zip(SERVERS, await asyncio.gather(*map(ask, SERVERS)), strict=True))

    answers = asyncio.run(ask_all())

    def every(kind: str) -> list[Any]:
        return by_name([item for server in answers.values() for item in server.get(kind, [])])

    return {
        "tools": every("tools"),
        "prompts": every("prompts"),
        "resources": every("resources"),
        "templates": sorted(
            (dump(t) for s in answers.values() for t in s.get("templates", [])),
            key=lambda t: t["uriTemplate"],
        ),
        "document": answers[EVERYTHING]["document"],
        "calls": {tool: answers[server][tool] for server, tool, _ in calls(repo)},
    }


# -- 1. the tools of several servers -------------------------------------------------------


async def test_tools_of_several_servers_are_listed_and_answer_as_directly(
    transport: str, address: GatewayAddress, direct: dict[str, Any], repo: Path
) -> None:
    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams) as session,
    ):
        assert session.server_info is not None and session.server_info.name == "berth"
        listed = (await session.list_tools()).tools
        assert by_name(listed) == direct["tools"]
        assert {"convert_time", "git_log", "echo", "get-sum"} <= {tool.name for tool in listed}
        for _, tool, arguments in calls(repo):
            result = await session.call_tool(tool, arguments)
            assert dump(result) == direct["calls"][tool], tool
        assert text_of(await session.call_tool("get-sum", {"a": 2, "b": 40})).endswith("42.")


# -- 2. everything else MCP has, passed through -------------------------------------------


async def test_prompts_and_completions_pass_through(
    transport: str, address: GatewayAddress, direct: dict[str, Any]
) -> None:
    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams) as session,
    ):
        assert by_name((await session.list_prompts()).prompts) == direct["prompts"]
        prompt = await session.get_prompt("args-prompt", {"city": "Lyon", "state": "Rhône"})
        assert text_of(prompt) == "What's weather in Lyon, Rhône?"

        team = types.PromptReference(type="ref/prompt", name="completable-prompt")
        departments = await session.complete(team, {"name": "department", "value": "S"})
        assert departments.completion.values == ["Sales", "Support"]
        people = await session.complete(
            team, {"name": "name", "value": "D"}, context_arguments={"department": "Sales"}
        )
        assert people.completion.values == ["David"]
        template = types.ResourceTemplateReference(type="ref/resource", uri=TEXT_TEMPLATE)
        ids = await session.complete(template, {"name": "resourceId", "value": "7"})
        assert ids.completion.values == ["7"]


@OLD_PROTOCOL
async def test_resources_read_and_subscribe_pass_through(
    transport: str, address: GatewayAddress, direct: dict[str, Any]
) -> None:
    notifications = Inbox()
    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams, message_handler=notifications) as session,
    ):
        assert by_name((await session.list_resources()).resources) == direct["resources"]
        templates = (await session.list_resource_templates()).resource_templates
        assert (
            sorted((dump(t) for t in templates), key=lambda t: t["uriTemplate"])
            == (direct["templates"])
        )
        assert dump(await session.read_resource(STATIC_DOCUMENT)) == direct["document"]
        # A URI no server listed, which one of `everything`'s templates matches.
        (dynamic,) = (await session.read_resource("demo://resource/dynamic/text/3")).contents
        assert isinstance(dynamic, types.TextResourceContents)
        assert dynamic.text.startswith("Resource 3: This is a plaintext resource")

        await session.subscribe_resource(STATIC_DOCUMENT)
        await session.call_tool("toggle-subscriber-updates", {})
        updated = await notifications.wait_for(
            lambda n: (
                isinstance(n, types.ResourceUpdatedNotification) and n.params.uri == STATIC_DOCUMENT
            ),
            "notifications/resources/updated",
        )
        assert updated.params.uri == STATIC_DOCUMENT
        await session.call_tool("toggle-subscriber-updates", {})
        await session.unsubscribe_resource(STATIC_DOCUMENT)


@OLD_PROTOCOL
async def test_progress_and_logging_reach_the_client(
    transport: str, address: GatewayAddress
) -> None:
    logged = Inbox()
    progress: list[tuple[float, float | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams, logging_callback=logged) as session,
    ):
        result = await session.call_tool(
            "trigger-long-running-operation",
            {"duration": 0.3, "steps": 3},
            progress_callback=on_progress,
        )
        assert text_of(result) == (
            "Long running operation completed. Duration: 0.3 seconds, Steps: 3."
        )
        assert progress == [(1, 3), (2, 3), (3, 3)]

        await session.set_logging_level("debug")
        await session.call_tool("toggle-simulated-logging", {})
        message = await logged.wait_for(lambda m: "level" in str(m.data), "a simulated log message")
        assert message.level in LEVELS
        await session.call_tool("toggle-simulated-logging", {})


async def test_sampling_and_elicitation_are_asked_of_the_client(
    transport: str, address: GatewayAddress
) -> None:
    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams, sampling_callback=sample, elicitation_callback=elicit) as session,
    ):
        # `everything` offers these only to a client that can sample and elicit.
        offered = {tool.name for tool in (await session.list_tools()).tools}
        assert {"trigger-sampling-request", "trigger-elicitation-request"} <= offered

        sampled = await session.call_tool(
            "trigger-sampling-request", {"prompt": "Say hi", "maxTokens": 10}
        )
        assert not sampled.is_error
        answer = json.loads(text_of(sampled).removeprefix("LLM sampling result: \n"))
        assert answer["content"]["text"] == (
            f"{SAMPLED} (Resource trigger-sampling-request context: Say hi)"
        )
        assert answer["model"] == "berth-test-model"

        elicited = text_of(await session.call_tool("trigger-elicitation-request", {}))
        assert "✅ User provided the requested information!" in elicited
        assert "- Name: Ada Lovelace" in elicited
        assert "- Agreed to terms: true" in elicited


async def test_a_cancelled_call_leaves_the_session_working(
    transport: str, address: GatewayAddress
) -> None:
    started = asyncio.Event()

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        started.set()

    async with (
        gateway_streams(address, transport) as streams,
        client_session(streams) as session,
    ):
        call = asyncio.create_task(
            session.call_tool(
                "trigger-long-running-operation",
                {"duration": 60, "steps": 600},
                progress_callback=on_progress,
            )
        )
        async with asyncio.timeout(20):
            await started.wait()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        async with asyncio.timeout(20):
            echoed = await session.call_tool("echo", {"message": "still here"})
        assert text_of(echoed) == "Echo: still here"
