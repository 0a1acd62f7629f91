"""berth-healthcheck: one grpc.health.v1 Check against a daemon, for probes and healthchecks.

Exit 0 when the service is SERVING, 1 when it is not (or the daemon does not know it),
2 when the daemon cannot be reached or the command line is wrong; one line on stderr
says why. Compose and Docker healthchecks and Kubernetes exec probes run it, usually on
a daemon's unix socket (Kubernetes' own grpc probe cannot speak TLS).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# gRPC's core would log a failed TLS handshake on stderr besides this command's one line;
# it reads the setting once, when imported (the console script imports this module first).
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from berth.common.addresses import parse_address
from berth.common.tls import flag_credentials

SERVING = 0
NOT_SERVING = 1
UNREACHABLE = 2
UNREACHABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    reason: str


class UsageError(ValueError):
    """The command line cannot be acted on."""


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="berth-healthcheck",
        description="Ask a berth daemon's grpc.health.v1 service whether it is serving. "
        "Exit 0: SERVING, 1: not serving, 2: unreachable.",
    )
    parser.add_argument("address", help="unix:///path/to.sock or HOST:PORT")
    parser.add_argument(
        "--service", default="", help="the gRPC service to ask about (default: the whole daemon)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)"
    )
    parser.add_argument("--tls-ca", type=Path, help="PEM CA bundle that signs the server's cert")
    parser.add_argument("--tls-cert", type=Path, help="PEM client certificate (mTLS)")
    parser.add_argument("--tls-key", type=Path, help="PEM key of the client certificate")
    parser.add_argument(
        "--server-name", help="verify the server certificate against this name, not the host"
    )
    return parser


def dial_target(address: str) -> tuple[str, bool]:
    """The grpc target for ADDRESS, and whether it is a unix socket."""
    parsed = parse_address(address)
    if parsed.is_unix:
        return parsed.target, True
    host, _, port = parsed.target.rpartition(":")
    # ":PORT" parses as a wildcard listen address; dialing means this host.
    return f"{'localhost' if host == '[::]' else host}:{port}", False


def credentials_options(
    args: argparse.Namespace,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """Channel credentials (None: plaintext) and channel options from the TLS flags."""
    if not (args.tls_ca or args.tls_cert or args.tls_key or args.server_name):
        return None, []
    credentials = flag_credentials(args.tls_ca, args.tls_cert, args.tls_key)
    options = [("grpc.ssl_target_name_override", args.server_name)] if args.server_name else []
    return credentials, options


def check(args: argparse.Namespace) -> Verdict:
    target, is_unix = dial_target(args.address)
    credentials, options = credentials_options(args)
    if is_unix and credentials is not None:
        raise UsageError("unix sockets never use TLS: drop the --tls-* and --server-name flags")
    channel = (
        grpc.secure_channel(target, credentials, options=options)
        if credentials is not None
        else grpc.insecure_channel(target)
    )
    what = f"{args.address} {args.service or '(daemon)'}"
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as error:
            return rpc_failure(what, error)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return Verdict(SERVING if status == "SERVING" else NOT_SERVING, f"{what}: {status}")


def rpc_failure(what: str, error: grpc.RpcError) -> Verdict:
    call: grpc.Call = error  # type: ignore[assignment]  # a failed unary call is both
    code = call.code().name
    details = " ".join(str(call.details() or "").split())
    if code in UNREACHABLE_CODES:
        return Verdict(UNREACHABLE, f"{what}: unreachable ({code}: {details})")
    if code == "NOT_FOUND":
        return Verdict(NOT_SERVING, f"{what}: unknown service")
    return Verdict(NOT_SERVING, f"{what}: {code}: {details}")


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        verdict = check(args)
    except (UsageError, ValueError) as error:
        verdict = Verdict(UNREACHABLE, f"berth-healthcheck: {error}")
    print(verdict.reason, file=sys.stderr)
    raise SystemExit(verdict.exit_code)
