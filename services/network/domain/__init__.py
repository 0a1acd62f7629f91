"""Network rules in plain Python: no grpc, no netlink."""
