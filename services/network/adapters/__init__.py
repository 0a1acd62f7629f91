"""Kernel adapters of the network agent: namespaces, links, firewall (pyroute2, nft)."""
