"""berth-mcpd: the MCP gateway service (catalogs, servers, tools, secrets)."""
