"""MCP gateway rules in plain Python: no grpc, no MCP transports."""
