"""`berth mcp`: request builders and renderers, and the commands against a fake daemon.

The fake daemon is a real gRPC server in this process whose methods answer what each test
sets in `daemon.replies` and record what the CLI sent in `daemon.calls`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from typer.testing import CliRunner

from berth.api.mcp.v1 import catalog_service_pb2 as catalog_pb
from berth.api.mcp.v1 import catalog_service_pb2_grpc as catalog_rpc
from berth.api.mcp.v1 import feature_service_pb2 as feature_pb
from berth.api.mcp.v1 import feature_service_pb2_grpc as feature_rpc
from berth.api.mcp.v1 import gateway_service_pb2 as gateway_pb
from berth.api.mcp.v1 import gateway_service_pb2_grpc as gateway_rpc
from berth.api.mcp.v1 import oauth_service_pb2 as oauth_pb
from berth.api.mcp.v1 import oauth_service_pb2_grpc as oauth_rpc
from berth.api.mcp.v1 import policy_service_pb2 as policy_pb
from berth.api.mcp.v1 import policy_service_pb2_grpc as policy_rpc
from berth.api.mcp.v1 import resources_pb2 as res
from berth.api.mcp.v1 import secret_service_pb2 as secret_pb
from berth.api.mcp.v1 import secret_service_pb2_grpc as secret_rpc
from berth.api.mcp.v1 import server_service_pb2 as server_pb
from berth.api.mcp.v1 import server_service_pb2_grpc as server_rpc
from berth.api.mcp.v1 import tool_service_pb2 as tool_pb
from berth.api.mcp.v1 import tool_service_pb2_grpc as tool_rpc
from berth.cli import mcp_gateway, mcp_oauth, mcp_secrets, mcp_servers, mcp_tools
from berth.cli.connection import Target
from berth.cli.context import connect, connection
from berth.cli.errors import CliError
from berth.cli.mcp import app
from berth.cli.mcp_common import Format, Transport, decode_json_text

runner = CliRunner()

SERVICES = [
    (tool_pb, "ToolService", tool_rpc.add_ToolServiceServicer_to_server),
    (server_pb, "ServerService", server_rpc.add_ServerServiceServicer_to_server),
    (catalog_pb, "CatalogService", catalog_rpc.add_CatalogServiceServicer_to_server),
    (secret_pb, "SecretService", secret_rpc.add_SecretServiceServicer_to_server),
    (policy_pb, "PolicyService", policy_rpc.add_PolicyServiceServicer_to_server),
    (oauth_pb, "OAuthService", oauth_rpc.add_OAuthServiceServicer_to_server),
    (feature_pb, "FeatureService", feature_rpc.add_FeatureServiceServicer_to_server),
    (gateway_pb, "GatewayService", gateway_rpc.add_GatewayServiceServicer_to_server),
]


class FakeDaemon:
    """Answers each RPC from `replies` (a message, or a function of request and context)."""

    def __init__(self) -> None:
        self.replies: dict[str, Any] = {}
        self.calls: dict[str, list[Any]] = {}
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        for module, name, add in SERVICES:
            add(self._servicer(module.DESCRIPTOR.services_by_name[name]), self.server)
        self.dir = tempfile.mkdtemp(prefix="bmcp")  # short: unix socket paths are limited
        self.socket = f"{self.dir}/d.sock"
        self.server.add_insecure_port(f"unix://{self.socket}")
        self.tcp_port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _servicer(self, service: Any) -> object:
        def method(name: str) -> Callable[..., Any]:
            return lambda _self, request, context: self.answer(name, request, context)

        return type("Fake", (), {m.name: method(m.name) for m in service.methods})()

    def answer(self, name: str, request: Any, context: grpc.ServicerContext) -> Any:
        if name not in self.replies:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{name} not faked")
        self.calls.setdefault(name, []).append(request)
        reply = self.replies[name]
        return reply(request, context) if callable(reply) else reply

    def last(self, name: str) -> Any:
        return self.calls[name][-1]

    def close(self) -> None:
        self.server.stop(None)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def daemon() -> Iterator[FakeDaemon]:
    fake = FakeDaemon()
    connect(Target(host=f"unix://{fake.socket}"))
    yield fake
    connection().close()
    connect(Target())
    fake.close()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


# -- tools call: arguments ------------------------------------------------------------


def test_call_arguments_are_json_when_they_parse_else_text() -> None:
    parsed = mcp_tools.parse_arguments(
        ["n=3", "flag=true", "ids=[1, 2]", 'q="7"', "tz=Europe/Paris", "expr=a=b", "empty="]
    )
    assert parsed == {
        "n": 3,
        "flag": True,
        "ids": [1, 2],
        "q": "7",
        "tz": "Europe/Paris",
        "expr": "a=b",
        "empty": "",
    }


@pytest.mark.parametrize("pair", ["noequals", "=value", " =x"])
def test_call_argument_without_key_is_refused(pair: str) -> None:
    with pytest.raises(CliError, match="expected key=value"):
        mcp_tools.parse_arguments([pair])


def test_call_argument_given_twice_is_refused() -> None:
    with pytest.raises(CliError, match="given twice"):
        mcp_tools.parse_arguments(["a=1", "a=2"])


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("1m30s", 90), ("500ms", 0.5), ("2", 2), ("1h", 3600)]
)
def test_timeout_durations(text: str, seconds: float) -> None:
    assert mcp_tools.parse_duration(text).ToNanoseconds() == round(seconds * 1e9)


@pytest.mark.parametrize("text", ["soon", "10x", "0s", "-1", "5s garbage"])
def test_bad_timeouts_are_refused(text: str) -> None:
    with pytest.raises(CliError, match="invalid duration"):
        mcp_tools.parse_duration(text)


def test_call_request_carries_arguments_server_and_timeout() -> None:
    request = mcp_tools.build_call_request("get_time", ["timezone=UTC", "n=2"], "time", "5s")
    assert request.name == "get_time" and request.server == "time"
    assert MessageToDict(request.arguments) == {"timezone": "UTC", "n": 2.0}
    assert request.timeout.seconds == 5


# -- tools call: results --------------------------------------------------------------


def rich_result() -> tool_pb.CallToolResponse:
    return tool_pb.CallToolResponse(
        content=[
            tool_pb.Content(text=tool_pb.TextContent(text="It is [bold]noon[/bold]")),
            tool_pb.Content(image=tool_pb.ImageContent(data=b"x" * 2048, mime_type="image/png")),
            tool_pb.Content(audio=tool_pb.AudioContent(data=b"abc", mime_type="audio/wav")),
            tool_pb.Content(
                resource=tool_pb.EmbeddedResource(
                    uri="file:///a.txt", mime_type="text/plain", text="hello"
                )
            ),
            tool_pb.Content(
                resource_link=tool_pb.ResourceLink(
                    uri="test://r/1", name="r1", mime_type="text/x", size=10
                )
            ),
        ],
        server="everything",
        tool="demo",
    )


def test_result_text_is_shown_as_is_and_other_items_as_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert mcp_tools.render_call(rich_result(), mcp_tools.ToolsOptions()) == 0
    assert capsys.readouterr().out.splitlines() == [
        "It is [bold]noon[/bold]",
        "[image: image/png, 2.0 KiB]",
        "[audio: audio/wav, 3 bytes]",
        "[resource: file:///a.txt (text/plain), 5 chars]",
        "[resource link: r1 <test://r/1> (text/x, 10 bytes)]",
    ]


def test_structured_content_is_shown_when_there_is_no_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    response = tool_pb.CallToolResponse()
    response.structured_content.update({"temperature": 21.5})
    mcp_tools.render_call(response, mcp_tools.ToolsOptions())
    assert json.loads(capsys.readouterr().out) == {"temperature": 21.5}


def test_tool_error_goes_to_stderr_with_status_1(capsys: pytest.CaptureFixture[str]) -> None:
    response = tool_pb.CallToolResponse(
        content=[tool_pb.Content(text=tool_pb.TextContent(text="unknown timezone"))], is_error=True
    )
    assert mcp_tools.render_call(response, mcp_tools.ToolsOptions()) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "unknown timezone\n"


def test_json_format_prints_the_whole_result(capsys: pytest.CaptureFixture[str]) -> None:
    mcp_tools.render_call(rich_result(), mcp_tools.ToolsOptions(format=Format.JSON))
    printed = json.loads(capsys.readouterr().out)
    assert printed["server"] == "everything" and printed["is_error"] is False
    assert len(printed["content"]) == 5
    assert printed["content"][4]["resource_link"]["uri"] == "test://r/1"


def test_tools_call_sends_the_arguments_and_prints_the_text(daemon: FakeDaemon) -> None:
    daemon.replies["CallTool"] = tool_pb.CallToolResponse(
        content=[tool_pb.Content(text=tool_pb.TextContent(text="12:00"))]
    )
    result = invoke(
        "tools", "call", "get_current_time", "timezone=Europe/Paris", "--server", "time"
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "12:00\n"
    sent = daemon.last("CallTool")
    assert sent.server == "time"
    assert MessageToDict(sent.arguments) == {"timezone": "Europe/Paris"}


def test_tools_call_exits_1_when_the_tool_reports_an_error(daemon: FakeDaemon) -> None:
    daemon.replies["CallTool"] = tool_pb.CallToolResponse(
        content=[tool_pb.Content(text=tool_pb.TextContent(text="boom"))], is_error=True
    )
    result = invoke("tools", "call", "fail")
    assert result.exit_code == 1 and "boom" in result.stderr


def test_malformed_call_argument_fails_before_any_call(daemon: FakeDaemon) -> None:
    result = invoke("tools", "call", "get_time", "timezone")
    assert result.exit_code == 1
    assert isinstance(result.exception, CliError)
    assert "expected key=value" in str(result.exception)
    assert "CallTool" not in daemon.calls


# -- tools ls, count, inspect ---------------------------------------------------------

SCHEMA = json.dumps(
    {
        "type": "object",
        "properties": {
            "timezone": {"type": "string", "description": "IANA name"},
            "n": {"type": ["integer", "null"]},
        },
        "required": ["timezone"],
    }
)


def listed_tools() -> tool_pb.ListToolsResponse:
    return tool_pb.ListToolsResponse(
        tools=[
            res.Tool(
                name="get_current_time",
                server="time",
                exposed_name="get_current_time",
                description="Get the time\nmore text",
                input_schema=SCHEMA,
                enabled=True,
            ),
            res.Tool(name="git_log", server="git", exposed_name="git_log", description="Log"),
        ],
        errors=[res.ServerError(server="broken", message="failed to start")],
    )


def test_tools_list_format(capsys: pytest.CaptureFixture[str]) -> None:
    mcp_tools.render_tools(listed_tools(), mcp_tools.ToolsOptions(verbose=True))
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        "2 tools:",
        " - get_current_time - Get the time",
        "     server: time",
        "     timezone (string, required) - IANA name",
        "     n (integer|null)",
        " - git_log (disabled) - Log",
        "     server: git",
    ]
    assert "server broken: failed to start" in captured.err


def test_tools_json_decodes_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    mcp_tools.render_tools(listed_tools(), mcp_tools.ToolsOptions(format=Format.JSON))
    printed = json.loads(capsys.readouterr().out)
    assert printed[0]["input_schema"]["required"] == ["timezone"]


def test_group_format_applies_to_the_subcommand(daemon: FakeDaemon) -> None:
    daemon.replies["ListTools"] = listed_tools()
    grouped = invoke("tools", "--format", "json", "ls")
    trailing = invoke("tools", "list", "--format", "json")
    assert grouped.exit_code == trailing.exit_code == 0
    assert json.loads(grouped.stdout) == json.loads(trailing.stdout)
    assert daemon.last("ListTools").verbose  # JSON carries the schemas


def test_tools_count_verbose_shows_servers(daemon: FakeDaemon) -> None:
    daemon.replies["CountTools"] = tool_pb.CountToolsResponse(
        count=3, server_counts={"time": 2, "git": 1}
    )
    result = invoke("tools", "count", "--verbose")
    lines = [line.split() for line in result.stdout.splitlines()]
    assert lines == [["3", "tools"], ["SERVER", "TOOLS"], ["git", "1"], ["time", "2"]]


def test_tools_disable_reports_each_tool(daemon: FakeDaemon) -> None:
    daemon.replies["DisableTools"] = tool_pb.DisableToolsResponse(
        tools=[res.ToolRef(server="git", name="git_push")]
    )
    result = invoke("tools", "disable", "--server", "git", "git_push")
    assert result.stdout == "Disabled tool git_push of server git\n"
    assert daemon.last("DisableTools").server == "git"


# -- server, config -------------------------------------------------------------------


def test_server_ls_shows_requirement_columns(daemon: FakeDaemon) -> None:
    daemon.replies["ListServers"] = server_pb.ListServersResponse(
        servers=[
            res.Server(
                name="github",
                description="GitHub [api]",
                oauth_status=res.REQUIREMENT_STATUS_REQUIRED,
                secrets_status=res.REQUIREMENT_STATUS_DONE,
                config_status=res.REQUIREMENT_STATUS_NONE,
                policy_status=res.REQUIREMENT_STATUS_PARTIAL,
                state=res.SERVER_STATE_RUNNING,
            )
        ]
    )
    rows = [line.split() for line in invoke("server", "ls").stdout.splitlines()]
    assert rows == [
        ["NAME", "OAUTH", "SECRETS", "CONFIG", "POLICY", "STATE", "DESCRIPTION"],
        ["github", "required", "done", "-", "partial", "running", "GitHub", "[api]"],
    ]


def test_server_enable_says_what_is_missing(daemon: FakeDaemon) -> None:
    daemon.replies["EnableServers"] = server_pb.EnableServersResponse(
        servers=[
            res.Server(name="time"),
            res.Server(name="postgres", secrets_status=res.REQUIREMENT_STATUS_REQUIRED),
        ]
    )
    result = invoke("server", "add", "time", "postgres")
    assert list(daemon.last("EnableServers").names) == ["time", "postgres"]
    assert result.stdout.splitlines() == [
        "Enabled time",
        "Enabled postgres",
        "  postgres needs secrets: see `berth mcp server inspect postgres`",
    ]


@pytest.mark.parametrize(
    ("args", "file", "expected"),
    [
        (["time", "format: iso"], None, ("time", "format: iso")),
        (["time"], None, ("time", None)),
        (["time"], "cfg.yaml", ("time", None)),
        (["time: {format: iso}"], None, ("", "time: {format: iso}")),
        (["{}"], None, ("", "{}")),
        ([], None, ("", None)),
    ],
)
def test_config_write_arguments(args: list[str], file: str | None, expected: tuple) -> None:
    assert mcp_servers.split_write_args(args, file) == expected


def test_config_write_refuses_two_documents() -> None:
    with pytest.raises(CliError, match="not both"):
        mcp_servers.split_write_args(["time", "a: 1"], "cfg.yaml")


def test_config_write_reads_stdin_for_a_server(daemon: FakeDaemon) -> None:
    daemon.replies["WriteServerConfig"] = server_pb.WriteServerConfigResponse()
    result = invoke("config", "write", "time", input="local_timezone: UTC\n")
    assert result.exit_code == 0, result.output
    sent = daemon.last("WriteServerConfig")
    assert (sent.server, sent.content) == ("time", "local_timezone: UTC\n")


def test_config_write_reads_a_file(daemon: FakeDaemon, tmp_path: Path) -> None:
    daemon.replies["WriteServerConfig"] = server_pb.WriteServerConfigResponse()
    (tmp_path / "c.yaml").write_text("git: {}\n")
    invoke("config", "write", "-f", str(tmp_path / "c.yaml"))
    sent = daemon.last("WriteServerConfig")
    assert (sent.server, sent.content) == ("", "git: {}\n")


# -- catalog --------------------------------------------------------------------------


def test_catalog_import_from_stdin_and_file(daemon: FakeDaemon, tmp_path: Path) -> None:
    daemon.replies["ImportCatalog"] = catalog_pb.ImportCatalogResponse(
        catalog=catalog_pb.Catalog(name="team"), servers=[res.ServerSpec(name="a")]
    )
    result = invoke("catalog", "import", "-", input="name: team\n")
    assert result.stdout == "Imported catalog team with 1 servers: a\n"
    assert (daemon.last("ImportCatalog").content, daemon.last("ImportCatalog").source) == (
        "name: team\n",
        "",
    )
    path = tmp_path / "team.yaml"
    path.write_text("registry: {}\n")
    invoke("catalog", "import", str(path), "--dry-run")
    sent = daemon.last("ImportCatalog")
    assert (sent.content, sent.source, sent.dry_run) == ("registry: {}\n", str(path), True)


def test_catalog_import_of_a_missing_file_is_a_clear_error(daemon: FakeDaemon) -> None:
    result = invoke("catalog", "import", "/nonexistent/cat.yaml")
    assert isinstance(result.exception, CliError)
    assert "not found: /nonexistent/cat.yaml" in str(result.exception)


def test_catalog_export_writes_the_file(daemon: FakeDaemon, tmp_path: Path) -> None:
    daemon.replies["ExportCatalog"] = catalog_pb.ExportCatalogResponse(content="name: berth\n")
    target = tmp_path / "out.yaml"
    assert invoke("catalog", "export", "berth", str(target)).exit_code == 0
    assert target.read_text() == "name: berth\n"
    assert invoke("catalog", "export", "berth").stdout == "name: berth\n"


# -- secrets and policy ---------------------------------------------------------------


def test_secret_value_from_stdin_loses_only_its_final_newline() -> None:
    request = mcp_secrets.build_set_request(
        "PW", "credstore", lambda _name: "my secret \n".rstrip("\r\n")
    )
    assert (request.name, request.value, request.provider) == ("PW", "my secret ", "credstore")
    inline = mcp_secrets.build_set_request("PW=a=b", "oauth/github", lambda _name: "unused")
    assert (inline.value, inline.provider) == ("a=b", "oauth/github")


@pytest.mark.parametrize(
    ("spec", "provider", "message"),
    [
        ("=x", "credstore", "invalid secret name"),
        ("MY KEY=x", "credstore", "invalid secret name"),
        ("K=", "credstore", "empty value"),
        ("K=v", "vault", "unsupported provider"),
        ("K=v", "oauth/", "unsupported provider"),
    ],
)
def test_bad_secret_input_is_refused(spec: str, provider: str, message: str) -> None:
    with pytest.raises(CliError, match=message):
        mcp_secrets.build_set_request(spec, provider, lambda _name: "")


def test_secret_set_from_stdin_never_echoes_the_value(daemon: FakeDaemon) -> None:
    daemon.replies["SetSecret"] = secret_pb.SetSecretResponse(
        secret=secret_pb.Secret(name="POSTGRES_PASSWORD", provider="credstore")
    )
    result = invoke("secret", "set", "POSTGRES_PASSWORD", input="my-secret-password\n")
    assert result.exit_code == 0, result.output
    assert daemon.last("SetSecret").value == "my-secret-password"
    assert "my-secret-password" not in result.output
    assert "POSTGRES_PASSWORD" in result.stdout


def test_secret_rm_needs_names_or_all() -> None:
    with pytest.raises(CliError):
        mcp_secrets.build_rm_request([], False)
    with pytest.raises(CliError):
        mcp_secrets.build_rm_request(["A"], True)
    assert mcp_secrets.build_rm_request([], True).all


def test_secret_export_prints_name_value_lines(daemon: FakeDaemon) -> None:
    daemon.replies["ExportSecrets"] = secret_pb.ExportSecretsResponse(
        secrets=[
            secret_pb.ExportedSecret(name="A", value="1"),
            secret_pb.ExportedSecret(name="B", value="x y"),
        ]
    )
    result = invoke("secret", "export", "postgres")
    assert result.stdout == "A=1\nB=x y\n"
    assert list(daemon.last("ExportSecrets").servers) == ["postgres"]


def test_policy_dump_then_set_round_trips(daemon: FakeDaemon) -> None:
    stored = {"content": "# team\nmy-secret allows postgres\napi-key allows github"}

    def set_policy(
        request: policy_pb.SetPolicyRequest, _context: Any
    ) -> policy_pb.SetPolicyResponse:
        stored["content"] = request.content
        return policy_pb.SetPolicyResponse(rule_count=2)

    daemon.replies["SetPolicy"] = set_policy
    daemon.replies["DumpPolicy"] = lambda _r, _c: policy_pb.DumpPolicyResponse(
        content=stored["content"]
    )
    backup = invoke("policy", "dump").stdout
    assert invoke("policies", "set", "my-secret allows postgres").exit_code == 0
    assert stored["content"] == "my-secret allows postgres"
    assert invoke("policy", "set", input=backup).stdout == "Policy set: 2 rules\n"
    assert invoke("policy", "dump").stdout == backup


# -- oauth ----------------------------------------------------------------------------


def test_oauth_authorize_prints_the_url_and_follows_the_stream(daemon: FakeDaemon) -> None:
    def authorize(request: Any, _context: Any) -> Iterator[oauth_pb.AuthorizeOAuthAppResponse]:
        started = oauth_pb.OAuthAuthorizationStarted(authorization_url="https://auth.example/a?x=1")
        yield oauth_pb.AuthorizeOAuthAppResponse(started=started)
        app_ = oauth_pb.OAuthApp(name=request.app, authorized=True, scopes=request.scopes)
        yield oauth_pb.AuthorizeOAuthAppResponse(authorized=app_)

    daemon.replies["AuthorizeOAuthApp"] = authorize
    result = invoke("oauth", "authorize", "github", "--scopes", "repo read:user")
    assert result.exit_code == 0, result.output
    assert "https://auth.example/a?x=1" in result.stdout
    assert "Authorized github (scopes: repo, read:user)" in result.stdout
    assert daemon.last("AuthorizeOAuthApp").redirect_uri == ""  # the daemon's own listener


def test_oauth_over_tcp_serves_the_redirect_and_hands_it_on(daemon: FakeDaemon) -> None:
    delivered = threading.Event()

    def authorize(request: Any, _context: Any) -> Iterator[oauth_pb.AuthorizeOAuthAppResponse]:
        started = oauth_pb.OAuthAuthorizationStarted(authorization_url="https://auth.example/")
        yield oauth_pb.AuthorizeOAuthAppResponse(started=started)
        # The user's browser lands on the CLI's loopback listener.
        with urllib.request.urlopen(
            f"{request.redirect_uri}?code=c0de&state=s1", timeout=10
        ) as page:
            assert b"complete" in page.read()
        assert delivered.wait(10)
        yield oauth_pb.AuthorizeOAuthAppResponse(authorized=oauth_pb.OAuthApp(name=request.app))

    def complete(request: Any, _context: Any) -> oauth_pb.CompleteOAuthAuthorizationResponse:
        delivered.set()
        return oauth_pb.CompleteOAuthAuthorizationResponse(app=oauth_pb.OAuthApp(name="github"))

    daemon.replies["AuthorizeOAuthApp"] = authorize
    daemon.replies["CompleteOAuthAuthorization"] = complete
    connect(Target(host=f"tcp://127.0.0.1:{daemon.tcp_port}", insecure=True))
    result = invoke("oauth", "authorize", "github")
    assert result.exit_code == 0, result.output
    callback = daemon.last("CompleteOAuthAuthorization").callback_url
    assert callback.startswith("http://127.0.0.1:") and callback.endswith(
        "/callback?code=c0de&state=s1"
    )


def test_loopback_listener_ignores_other_paths() -> None:
    listener = mcp_oauth.LoopbackRedirect(lambda _url: None)
    try:
        base = listener.redirect_uri.removesuffix("/callback")
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(f"{base}/favicon.ico", timeout=10)
        assert error.value.code == 404
    finally:
        listener.close()


# -- feature, client ------------------------------------------------------------------


def test_feature_ls_table(daemon: FakeDaemon) -> None:
    daemon.replies["ListFeatures"] = feature_pb.ListFeaturesResponse(
        features=[
            feature_pb.Feature(
                name="tool-name-prefix", description="Offer server__tool", enabled=True
            )
        ]
    )
    rows = [line.rstrip().split(None, 2) for line in invoke("feature", "ls").stdout.splitlines()]
    assert rows == [
        ["NAME", "ENABLED", "DESCRIPTION"],
        ["tool-name-prefix", "yes", "Offer server__tool"],
    ]


# -- gateway --------------------------------------------------------------------------


def test_gateway_requests_send_limits_first_and_skip_blank_lines() -> None:
    lines = [b'{"jsonrpc":"2.0","id":1}\n', b"\n", b'{"jsonrpc":"2.0","method":"x"}\r\n']
    requests = list(mcp_gateway.gateway_requests(lines, ["time"], []))
    assert requests[0].options.servers == ["time"]
    assert [r.message for r in requests[1:]] == [
        '{"jsonrpc":"2.0","id":1}',
        '{"jsonrpc":"2.0","method":"x"}',
    ]
    assert not list(mcp_gateway.gateway_requests([], [], []))


def test_gateway_stdio_relays_both_ways(daemon: FakeDaemon) -> None:
    seen: list[Any] = []

    def run_gateway(requests: Any, _context: Any) -> Iterator[gateway_pb.RunGatewayResponse]:
        yield gateway_pb.RunGatewayResponse(session=gateway_pb.GatewaySession(id="s1"))
        for request in requests:
            seen.append(request)
            if request.WhichOneof("kind") == "message":
                incoming = json.loads(request.message)
                reply = {"jsonrpc": "2.0", "id": incoming["id"], "result": {}}
                yield gateway_pb.RunGatewayResponse(message=json.dumps(reply))

    daemon.replies["RunGateway"] = run_gateway
    stdin = '{"jsonrpc":"2.0","id":1,"method":"ping"}\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n'
    result = invoke(
        "gateway", "run", "--servers", "time,git", "--tools", "get_current_time", input=stdin
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [1, 2]
    assert list(seen[0].options.servers) == ["time", "git"]
    assert list(seen[0].options.tools) == ["get_current_time"]


def test_fd_lines_yields_lines_split_across_reads() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, b'{"a":1}\n{"b"')
    os.write(write_end, b":2}\n\ntail")
    os.close(write_end)
    assert list(mcp_gateway.fd_lines(read_end)) == [b'{"a":1}', b'{"b":2}', b"", b"tail"]
    os.close(read_end)


def gateway_process(daemon: FakeDaemon) -> subprocess.Popen[bytes]:
    """`berth mcp gateway run` as an MCP client starts it: a process on pipes."""
    code = (
        "import sys\n"
        "from berth.cli.connection import Target\n"
        "from berth.cli.context import connect, connection\n"
        "from berth.cli.mcp import app\n"
        f"connect(Target(host='unix://{daemon.socket}'))\n"
        "sys.argv = ['berth', 'gateway', 'run']\n"
        "try:\n    app()\nfinally:\n    connection().close()\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def ping(number: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": number, "method": "ping"}).encode() + b"\n"


def test_gateway_stdio_answers_each_line_before_the_next_arrives(daemon: FakeDaemon) -> None:
    def run_gateway(requests: Any, _context: Any) -> Iterator[gateway_pb.RunGatewayResponse]:
        for request in requests:
            number = json.loads(request.message)["id"]
            yield gateway_pb.RunGatewayResponse(message=f'{{"id":{number}}}')

    daemon.replies["RunGateway"] = run_gateway
    process = gateway_process(daemon)
    assert process.stdin and process.stdout
    for number in range(3):  # a client waits for each answer: nothing may sit in a buffer
        process.stdin.write(ping(number))
        process.stdin.flush()
        assert process.stdout.readline() == f'{{"id":{number}}}\n'.encode()
    process.stdin.close()  # the client ends the session
    assert process.wait(timeout=30) == 0


def test_gateway_stdio_exits_when_the_daemon_ends_the_session(daemon: FakeDaemon) -> None:
    def run_gateway(requests: Any, _context: Any) -> Iterator[gateway_pb.RunGatewayResponse]:
        next(iter(requests))
        yield gateway_pb.RunGatewayResponse(message='{"bye":1}')

    daemon.replies["RunGateway"] = run_gateway
    process = gateway_process(daemon)
    assert process.stdin and process.stdout
    process.stdin.write(ping(1))
    process.stdin.flush()
    assert process.stdout.readline() == b'{"bye":1}\n'
    # stdin stays open: the process must still exit cleanly, not hang or abort.
    assert process.wait(timeout=30) == 0
    process.stdin.close()


def status_with(*endpoints: tuple[int, str]) -> gateway_pb.GetGatewayStatusResponse:
    return gateway_pb.GetGatewayStatusResponse(
        endpoints=[gateway_pb.GatewayEndpoint(transport=t, url=u) for t, u in endpoints]
    )


def test_gateway_http_transports_print_the_daemon_endpoint(daemon: FakeDaemon) -> None:
    daemon.replies["GetGatewayStatus"] = status_with(
        (res.GATEWAY_TRANSPORT_STREAMING, "http://127.0.0.1:8811/mcp"),
        (res.GATEWAY_TRANSPORT_SSE, "http://127.0.0.1:8811/sse"),
    )
    assert invoke("gateway", "run", "--transport", "sse").stdout == "http://127.0.0.1:8811/sse\n"
    other_port = invoke("gateway", "run", "--transport", "streaming", "--port", "9000")
    assert other_port.stdout == "http://127.0.0.1:8811/mcp\n"
    assert "port 8811, not 9000" in other_port.stderr


def test_gateway_without_http_endpoint_says_so() -> None:
    with pytest.raises(CliError, match="not serving MCP over sse"):
        mcp_gateway.endpoint_url(status_with(), Transport.SSE)


# -- shared ---------------------------------------------------------------------------


def test_schema_text_fields_become_documents_in_json() -> None:
    data = {"spec": {"config_schema": '{"type": "object"}', "title": "{not json"}, "tools": []}
    assert decode_json_text(data) == {
        "spec": {"config_schema": {"type": "object"}, "title": "{not json"},
        "tools": [],
    }


def test_every_subcommand_has_help() -> None:
    groups = {
        "catalog": ["ls", "show", "create", "import", "export", "add", "rm", "reset", "server"],
        "server": ["enable", "add", "disable", "remove", "rm", "list", "ls", "inspect", "reset"],
        "config": ["read", "write", "reset"],
        "tools": ["ls", "list", "count", "inspect", "call", "enable", "disable"],
        "secret": ["set", "ls", "rm", "export"],
        "policy": ["set", "dump"],
        "oauth": ["ls", "authorize", "revoke", "complete"],
        "client": ["connect", "disconnect", "ls"],
        "feature": ["enable", "disable", "ls"],
        "gateway": ["run"],
    }
    for group, commands in groups.items():
        for command in commands:
            result = invoke(group, command, "--help")
            assert result.exit_code == 0, f"{group} {command}: {result.output}"
    assert invoke("version", "--help").exit_code == 0
