"""gRPC servicers of the network agent: parse, validate, call the domain, map errors."""
