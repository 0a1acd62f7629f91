"""Model runner rules in plain Python: no grpc, no engines."""
