"""Generated protobuf and gRPC stubs for package peer.v1 (see `make proto`)."""
