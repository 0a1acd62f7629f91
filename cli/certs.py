"""`berth certs`: a private CA and certificates for a cluster, for people who have no PKI.

Local commands: they write files and never connect to a gateway. `init` makes the CA and a
server and a client certificate; `issue` signs more with the same CA.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from berth.cli.errors import fail
from berth.cli.output import print_lines
from berth.common import pki

DEFAULT_DIR = Path("berth-certs")

app = typer.Typer(
    help="Create a private CA and TLS certificates for a cluster (no gateway needed)",
    no_args_is_help=True,
)

DirOption = Annotated[
    Path,
    typer.Option(
        "--dir", metavar="DIR", help="folder of the CA and the certificates", show_default=True
    ),
]
HostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="NAME",
        help="DNS name the certificate is valid for (repeatable; a wildcard like *.berth.svc)",
        show_default=False,
    ),
]
IpOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ip",
        metavar="ADDR",
        help="IP address the certificate is valid for (repeatable)",
        show_default=False,
    ),
]
ForceOption = Annotated[bool, typer.Option("--force", help="replace existing files")]


@app.command("init")
def init(
    directory: DirOption = DEFAULT_DIR,
    host: HostOption = None,
    ip: IpOption = None,
    days: Annotated[
        int,
        typer.Option("--days", metavar="N", help="validity of the server and client certificates"),
    ] = pki.LEAF_DAYS,
    force: ForceOption = False,
) -> None:
    """Create a CA, a server certificate and a client certificate for a cluster.

    The server certificate is valid for localhost, 127.0.0.1, ::1 and each --host and --ip.
    """
    try:
        paths = pki.init_cluster(directory, host or [], ip or [], days, force)
    except pki.ExistingFilesError as error:
        fail(
            f"{error}\nUse --force to replace them (certificates signed by the old CA stop"
            " working), or `berth certs issue` to sign more with the existing CA."
        )
    except (pki.CertificateError, OSError) as error:
        fail(str(error))
    print_lines(_written(paths.values()))
    print_lines(_next_steps(paths))


@app.command("issue")
def issue(
    name: Annotated[str, typer.Argument(metavar="NAME", help="writes NAME.pem and NAME-key.pem")],
    directory: DirOption = DEFAULT_DIR,
    host: HostOption = None,
    ip: IpOption = None,
    client: Annotated[
        bool, typer.Option("--client", help="a client certificate (default: a server one)")
    ] = False,
    days: Annotated[
        int, typer.Option("--days", metavar="N", help="validity (never past the CA's)")
    ] = pki.LEAF_DAYS,
    force: ForceOption = False,
) -> None:
    """Sign a new certificate with the CA in --dir (made by `berth certs init`)."""
    try:
        cert, key = pki.issue(directory, name, host or [], ip or [], client, days, force)
    except pki.ExistingFilesError as error:
        fail(f"{error}\nUse --force to replace them.")
    except (pki.CertificateError, OSError) as error:
        fail(str(error))
    print_lines(_written([cert, key]))


def _written(paths: Iterable[Path]) -> list[str]:
    lines = []
    for path in paths:
        if path.name.endswith("-key.pem"):
            lines.append(f"wrote {path}  (private key, mode 0600)")
            continue
        info = pki.describe(path)
        names = f" for {', '.join(info.names)}" if info.names else ""
        lines.append(f"wrote {path}")
        lines.append(
            f"  {info.usage} certificate {info.subject!r}{names},"
            f" expires {info.not_after:%Y-%m-%d %H:%M} UTC"
        )
    return lines


def _next_steps(paths: dict[str, Path]) -> list[str]:
    ca, server, server_key = paths["ca"], paths["server"], paths["server-key"]
    client, client_key = paths["client"], paths["client-key"]
    return [
        "",
        "Next steps (copy the files to each host, e.g. /etc/berth/tls/; keep ca-key.pem offline):",
        f"  daemons:  --tls-cert {server} --tls-key {server_key} --tls-client-ca {ca}",
        f"  gateway:  --upstream-tls-ca {ca} --upstream-tls-cert {client}"
        f" --upstream-tls-key {client_key}",
        f"            and --tls-cert {server} --tls-key {server_key} for its own TCP listener",
        f"  berth:    BERTH_TLS_CA={ca}",
        f"More certificates with the same CA: berth certs issue NAME --dir {ca.parent} --host ...",
    ]
