"""gRPC servicers of the MCP service: parse, validate, call the domain, map errors."""
