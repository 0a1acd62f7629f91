"""Shared runtime of every berth daemon: server bootstrap, logging, errors, settings."""
