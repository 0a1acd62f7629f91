"""berth-gateway: the front door that routes every call to the right daemon."""
