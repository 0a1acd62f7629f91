"""Generated gRPC stubs of the berth contracts (make protos). Do not edit."""
