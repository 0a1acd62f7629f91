"""Adapters of berth-mcpd: where its state lives."""
