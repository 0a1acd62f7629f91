"""`berth mcp secret` and `berth mcp policy`: the secret store and who may receive what.

A value reaches the daemon only in SetSecret and comes back only through `secret export`;
no other command prints one.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from berth.api.mcp.v1 import policy_service_pb2 as policy_pb
from berth.api.mcp.v1 import policy_service_pb2_grpc as policy_rpc
from berth.api.mcp.v1 import secret_service_pb2 as pb
from berth.api.mcp.v1 import secret_service_pb2_grpc as rpc
from berth.cli.errors import CliError
from berth.cli.mcp_common import emit, emit_json, joined, read_stdin, stub, when
from berth.cli.output import print_table

secret_app = typer.Typer(help="Manage secrets", no_args_is_help=True)
policy_app = typer.Typer(help="Manage secret policies (alias: policies)", no_args_is_help=True)

DEFAULT_PROVIDER = "credstore"


def _secrets() -> rpc.SecretServiceStub:
    return stub(rpc.SecretServiceStub)


def _policy() -> policy_rpc.PolicyServiceStub:
    return stub(policy_rpc.PolicyServiceStub)


# -- secret set -----------------------------------------------------------------------


def check_provider(provider: str) -> str:
    if provider == DEFAULT_PROVIDER or (provider.startswith("oauth/") and provider != "oauth/"):
        return provider
    raise CliError(f"unsupported provider {provider!r}: use credstore or oauth/<provider>")


def value_from_stdin(name: str) -> str:
    """The value for `secret set KEY`: piped stdin without its final newline, or typed hidden."""
    if sys.stdin is not None and sys.stdin.isatty():
        return typer.prompt(f"Value of {name}", hide_input=True)
    return read_stdin(f"value for {name}").rstrip("\r\n")


def build_set_request(
    spec: str, provider: str, read_value: Callable[[str], str] = value_from_stdin
) -> pb.SetSecretRequest:
    """`KEY=VALUE`, or `KEY` with the value read by `read_value(KEY)`."""
    name, sep, value = spec.partition("=")
    name = name.strip()
    if not name or any(char.isspace() for char in name):
        raise CliError("invalid secret name: expected KEY=VALUE or KEY (value on stdin)")
    if not sep:
        value = read_value(name)
    if not value:
        raise CliError(f"empty value for secret {name}")
    return pb.SetSecretRequest(name=name, value=value, provider=check_provider(provider))


@secret_app.command("set")
def set_(
    spec: Annotated[str, typer.Argument(metavar="KEY[=VALUE]", help="Without =VALUE, read stdin")],
    provider: Annotated[
        str, typer.Option("--provider", help="Supported: credstore, oauth/<provider>")
    ] = DEFAULT_PROVIDER,
) -> None:
    """Set a secret in berth's secret store."""
    secret = _secrets().SetSecret(build_set_request(spec, provider)).secret
    emit(f"Set secret {secret.name} ({secret.provider or provider})")


# -- secret ls, rm, export ------------------------------------------------------------


def render_secrets(response: pb.ListSecretsResponse, as_json: bool) -> None:
    if as_json:
        emit_json(list(response.secrets))
        return
    print_table(
        ["name", "provider", "servers", "updated"],
        ([s.name, s.provider, joined(s.servers), when(s.update_time)] for s in response.secrets),
    )


@secret_app.command("ls")
def ls(json_: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List all secret names (never their values) (alias: list)."""
    render_secrets(_secrets().ListSecrets(pb.ListSecretsRequest()), json_)


secret_app.command("list", hidden=True)(ls)


def build_rm_request(names: list[str], all_: bool) -> pb.RemoveSecretsRequest:
    if all_ and names:
        raise CliError("give secret names or --all, not both")
    if not all_ and not names:
        raise CliError("give the names of the secrets to remove, or --all")
    return pb.RemoveSecretsRequest(names=names, all=all_)


@secret_app.command("rm")
def rm(
    names: Annotated[list[str] | None, typer.Argument(metavar="NAME...")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Remove all secrets")] = False,
) -> None:
    """Remove secrets from the store (alias: remove)."""
    removed = _secrets().RemoveSecrets(build_rm_request(list(names or []), all_)).names
    emit(f"Removed {', '.join(removed)}" if removed else "No secret to remove")


secret_app.command("remove", hidden=True)(rm)


def export_lines(response: pb.ExportSecretsResponse) -> list[str]:
    return [f"{secret.name}={secret.value}" for secret in response.secrets]


@secret_app.command("export")
def export(
    servers: Annotated[list[str] | None, typer.Argument(metavar="[SERVER]...")] = None,
) -> None:
    """Print NAME=value for the secrets the servers declare and may receive (reveals values)."""
    response = _secrets().ExportSecrets(pb.ExportSecretsRequest(servers=servers or []))
    for line in export_lines(response):
        sys.stdout.write(line + "\n")


# -- policy ---------------------------------------------------------------------------


def policy_content(content: str | None) -> str:
    """The policy text from the argument, or from stdin (`cat policy.conf | ... policy set`)."""
    if content is None or content == "-":
        return read_stdin("policy")
    return content


@policy_app.command("set")
def policy_set(
    content: Annotated[
        str | None,
        typer.Argument(
            metavar="[CONTENT]", help='e.g. "my-secret allows postgres"; - or none: stdin'
        ),
    ] = None,
) -> None:
    """Set the secret policy (one rule per line) from the argument or stdin."""
    response = _policy().SetPolicy(policy_pb.SetPolicyRequest(content=policy_content(content)))
    emit(f"Policy set: {response.rule_count} rules")


@policy_app.command("dump")
def policy_dump() -> None:
    """Print the policy as set, so that `policy dump > f` and `policy set < f` round-trip."""
    content = _policy().DumpPolicy(policy_pb.DumpPolicyRequest()).content
    if content:
        emit(content)
