"""Python clients of a tessera server: GrpcClient (gRPC, needs grpcio and protobuf) and
HttpClient (the OpenAI-compatible HTTP API, standard library only)."""

from .http_client import HttpClient
from .types import GenerateChunk, GenerateResult, ModelInfo, TesseraError, Tokens, Usage

__all__ = ["GrpcClient", "HttpClient", "GenerateChunk", "GenerateResult", "ModelInfo", "TesseraError",
           "Tokens", "Usage"]
__version__ = "0.1.0"


def __getattr__(name):
    # grpcio is imported only when GrpcClient is used, so HttpClient works without it.
    if name == "GrpcClient":
        from .grpc_client import GrpcClient
        return GrpcClient
    raise AttributeError(f"module 'tessera_client' has no attribute {name!r}")
