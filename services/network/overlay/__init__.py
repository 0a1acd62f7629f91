"""Overlay networks: the cluster link and the agent's side of the cluster."""
