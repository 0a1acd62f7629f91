"""berth-networkd: the network agent (bridges, IPAM, sandboxes, DNS, overlays)."""
