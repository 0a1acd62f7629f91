"""The `berth` command: Docker's network, model and mcp verbs against a berth gateway."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import grpc
import typer

from berth.cli import certs, mcp, model, network, sandbox, system, up
from berth.cli.connection import DEFAULT_HOST, Target
from berth.cli.context import connect, connection
from berth.cli.errors import EXIT_FAILURE, EXIT_INTERRUPTED, CliError, describe_rpc_error

app = typer.Typer(
    name="berth",
    help="Networks, models and MCP servers for a fleet of Linux hosts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(network.app, name="network")
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(model.app, name="model")
app.add_typer(mcp.app, name="mcp")
app.command("up")(up.up)
app.command("version")(system.version)
app.command("status")(system.status)
app.command("info")(system.info)
app.add_typer(system.token_app, name="token")
app.add_typer(certs.app, name="certs")


@app.callback()
def global_options(
    host: Annotated[
        str, typer.Option("-H", "--host", envvar="BERTH_HOST", help="berth gateway to talk to")
    ] = DEFAULT_HOST,
    token: Annotated[
        str | None,
        typer.Option(envvar="BERTH_TOKEN", help="bearer token for TCP hosts", show_default=False),
    ] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(envvar="BERTH_TLS_CA", help="CA certificate to trust (TCP)")
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(
            envvar="BERTH_TLS_CERT", help="client certificate, for a gateway that asks for one"
        ),
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(envvar="BERTH_TLS_KEY", help="private key of --tls-cert")
    ] = None,
    insecure: Annotated[
        bool, typer.Option(envvar="BERTH_INSECURE", help="plaintext TCP (development only)")
    ] = False,
    on: Annotated[
        str | None,
        typer.Option("--on", envvar="BERTH_ON", help="host whose network agent handles the call"),
    ] = None,
) -> None:
    connect(
        Target(
            host=host,
            token=token,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            insecure=insecure,
            on=on,
        )
    )


def main() -> None:
    try:
        app()
    except grpc.RpcError as error:
        print(f"berth: {describe_rpc_error(error, connection().target.host)}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    except CliError as error:
        print(f"berth: {error}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    finally:
        connection().close()


if __name__ == "__main__":
    main()
