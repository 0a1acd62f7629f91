"""The berth command-line client."""
