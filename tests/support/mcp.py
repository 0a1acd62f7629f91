"""MCP test helpers: the real servers the tests run, and how to reach the endpoint."""

from __future__ import annotations

from pathlib import Path

from berth.api.mcp.v1 import gateway_service_pb2 as gateway_pb
from berth.api.mcp.v1 import gateway_service_pb2_grpc as gateway_rpc
from berth.api.mcp.v1 import resources_pb2 as res
from tests.support.processes import BIN

REPO = Path(__file__).resolve().parents[2]
NODE_BIN = REPO / "node_modules" / ".bin"
# The bearer token the test stacks' endpoint requires.
MCP_GATEWAY_TOKEN = "berth-test-mcp-token"
# Real servers, installed by `make setup`: the PyPI ones in the virtual environment, the npm
# ones under node_modules (run directly: `npx -y` would fetch them from the registry).
TEST_CATALOG = f"""\
name: test-servers
servers:
  everything-local:
    title: Everything (local)
    description: The MCP reference test server, from node_modules
    command: {NODE_BIN / "mcp-server-everything"}
  time-utc:
    title: Time in UTC
    description: mcp-server-time, told its local time zone
    command: {BIN / "mcp-server-time"}
    args: ["--local-timezone", "{{{{time-utc.zone}}}}"]
    config:
      type: object
      properties: {{zone: {{type: string}}}}
      required: [zone]
"""


def endpoint_url(channel: object, transport: int = res.GATEWAY_TRANSPORT_STREAMING) -> str:
    """Where berth-mcpd serves MCP over HTTP (`/mcp` or `/sse`)."""
    stub = gateway_rpc.GatewayServiceStub(channel)
    status = stub.GetGatewayStatus(gateway_pb.GetGatewayStatusRequest())
    return next(e.url for e in status.endpoints if e.transport == transport)
