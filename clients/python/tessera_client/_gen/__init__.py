"""Modules generated from proto/tessera/v1 by generate_protos.sh (protoc 3.21, grpc 1.51)."""
