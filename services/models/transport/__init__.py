"""gRPC servicers of the model runner: parse, validate, call the domain, map errors."""
