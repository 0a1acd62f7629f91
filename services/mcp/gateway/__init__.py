"""The aggregated MCP endpoint: upstream connections to servers, sessions that route between a
client and them, the HTTP transports, and the hub that owns it all."""
