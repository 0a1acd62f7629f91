"""The network agent's embedded DNS server (127.0.0.11 inside sandboxes)."""
