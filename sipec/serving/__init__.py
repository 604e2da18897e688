"""gRPC serving runtime, model repository, backends and model server."""
