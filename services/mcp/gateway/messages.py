"""JSON-RPC 2.0 messages as MCP sends them, kept as plain dicts: the gateway routes messages
and rewrites a few fields, so it never needs them as typed objects."""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]
RequestId = int | str

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# MCP's "request timed out" and berth's "the server is gone" (implementation-defined range).
REQUEST_TIMEOUT = -32001
SERVER_UNAVAILABLE = -32002
# The call was refused by berth's own rules (a disabled tool, a name several servers offer).
REFUSED = -32003


class RpcError(Exception):
    """A JSON-RPC error, from a peer or to be sent to one."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error

    @classmethod
    def from_error(cls, error: Any) -> RpcError:
        if not isinstance(error, dict):
            return cls(INTERNAL_ERROR, str(error))
        return cls(
            int(error.get("code", INTERNAL_ERROR)), str(error.get("message", "")), error.get("data")
        )


def request(request_id: RequestId, method: str, params: dict[str, Any] | None = None) -> Message:
    message: Message = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        message["params"] = params
    return message


def notification(method: str, params: dict[str, Any] | None = None) -> Message:
    message: Message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def result(request_id: RequestId, value: dict[str, Any]) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "result": value}


def error(request_id: RequestId | None, failure: RpcError) -> Message:
    return {"jsonrpc": "2.0", "id": request_id, "error": failure.to_error()}


def is_request(message: Message) -> bool:
    return "method" in message and "id" in message


def is_notification(message: Message) -> bool:
    return "method" in message and "id" not in message


def is_response(message: Message) -> bool:
    return "method" not in message and ("result" in message or "error" in message)


def params_of(message: Message) -> dict[str, Any]:
    params = message.get("params")
    return params if isinstance(params, dict) else {}


def progress_token(params: dict[str, Any]) -> Any:
    meta = params.get("_meta")
    return meta.get("progressToken") if isinstance(meta, dict) else None
