"""GrpcClient: the tessera Inference and Admin gRPC services from Python (needs grpcio)."""

import json
from typing import Iterator, List, Optional, Sequence, Union

import grpc

from ._gen import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from .types import GenerateChunk, GenerateResult, ModelInfo, TesseraError, Tokens, Usage

_FINISH_REASONS = {
    inference_pb2.FINISH_REASON_STOP: "stop",
    inference_pb2.FINISH_REASON_LENGTH: "length",
    inference_pb2.FINISH_REASON_ABORT: "abort",
}


def _error(e: grpc.RpcError, target: str) -> TesseraError:
    code = e.code().name if e.code() is not None else "UNKNOWN"
    message = e.details() or ""
    if code == "UNAVAILABLE":
        message = f"cannot reach the tessera server at {target}: {message}"
    return TesseraError(code, message)


class GrpcClient:
    """A connection to a tessera server's gRPC listener.

    >>> c = GrpcClient("127.0.0.1:50051")
    >>> for chunk in c.generate("Once upon a time", max_tokens=32, temperature=0, stream=True):
    ...     print(chunk.text, end="", flush=True)

    `token` is sent as "authorization: Bearer TOKEN" on admin calls. `timeout` is the
    deadline of each call in seconds (None: no deadline).
    """

    def __init__(self, target: str = "127.0.0.1:50051", token: Optional[str] = None,
                 timeout: Optional[float] = None):
        self.target = target
        self.token = token
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target)
        self._inference = inference_pb2_grpc.InferenceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Inference

    def generate(self, prompt: Union[str, Sequence[int]], max_tokens: Optional[int] = None,
                 temperature: Optional[float] = None, top_p: Optional[float] = None,
                 top_k: Optional[int] = None, min_p: Optional[float] = None, seed: Optional[int] = None,
                 stop: Optional[Sequence[str]] = None, stop_token_ids: Optional[Sequence[int]] = None,
                 ignore_eos: bool = False, model: str = "", adapter: str = "", request_id: str = "",
                 stream: bool = False) -> Union[GenerateResult, Iterator[GenerateChunk]]:
        """Generates from a prompt (text, or a list of token ids).

        With stream=True returns an iterator of GenerateChunk as the server produces them
        (leaving the loop early cancels the request); otherwise waits and returns a
        GenerateResult. Unset sampling fields take the server's defaults.
        """
        req = inference_pb2.GenerateRequest(model=model, adapter=adapter, ignore_eos=ignore_eos,
                                            request_id=request_id)
        if isinstance(prompt, str):
            req.prompt = prompt
        else:
            req.prompt_ids.ids.extend(prompt)
        if max_tokens is not None:
            req.max_tokens = max_tokens
        for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k),
                            ("min_p", min_p), ("seed", seed)):
            if value is not None:
                setattr(req.sampling, name, value)
        req.stop.extend(stop or [])
        req.stop_token_ids.extend(stop_token_ids or [])
        chunks = self._stream(req)
        if stream:
            return chunks
        text, ids, finish, usage, rid = [], [], None, Usage(), ""
        for c in chunks:
            text.append(c.text)
            ids.extend(c.token_ids)
            rid = c.request_id or rid
            if c.finish_reason is not None:
                finish, usage = c.finish_reason, c.usage
        return GenerateResult("".join(text), ids, finish, usage, rid)

    def _stream(self, req) -> Iterator[GenerateChunk]:
        call = self._inference.Generate(req, timeout=self.timeout)
        try:
            for msg in call:
                finished = msg.finish_reason != inference_pb2.FINISH_REASON_UNSPECIFIED
                yield GenerateChunk(
                    text=msg.text,
                    token_ids=list(msg.token_ids),
                    finish_reason=_FINISH_REASONS.get(msg.finish_reason) if finished else None,
                    usage=Usage(msg.usage.prompt_tokens, msg.usage.completion_tokens,
                                msg.usage.cached_prompt_tokens) if finished else None,
                    request_id=msg.request_id)
        except grpc.RpcError as e:
            raise _error(e, self.target) from None
        finally:
            # Runs when the caller stops iterating early too: the server then aborts the request.
            call.cancel()

    def tokenize(self, text: str, add_special_tokens: bool = True, model: str = "") -> Tokens:
        resp = self._unary(self._inference.Tokenize, inference_pb2.TokenizeRequest(
            model=model, text=text, add_special_tokens=add_special_tokens))
        return Tokens(list(resp.ids), list(resp.pieces))

    def list_models(self) -> List[ModelInfo]:
        resp = self._unary(self._inference.ListModels, inference_pb2.ListModelsRequest())
        return [ModelInfo(m.id, m.kind, m.parent, m.max_model_len) for m in resp.models]

    # Admin (bearer token)

    def load_lora_adapter(self, name: str, path: str) -> str:
        return self._unary(self._admin.LoadLoraAdapter,
                           admin_pb2.LoadLoraAdapterRequest(lora_name=name, lora_path=path), admin=True).message

    def unload_lora_adapter(self, name: str) -> str:
        return self._unary(self._admin.UnloadLoraAdapter,
                           admin_pb2.UnloadLoraAdapterRequest(lora_name=name), admin=True).message

    def drift_stats(self, model: str = "", adapter: str = "") -> dict:
        return self._drift(self._admin.GetDriftStats, model, adapter)

    def capture_drift_baseline(self, model: str = "", adapter: str = "") -> dict:
        return self._drift(self._admin.CaptureDriftBaseline, model, adapter)

    def reset_drift(self, model: str = "", adapter: str = "") -> dict:
        return self._drift(self._admin.ResetDrift, model, adapter)

    def _drift(self, method, model, adapter) -> dict:
        resp = self._unary(method, admin_pb2.DriftTarget(model=model, adapter=adapter), admin=True)
        return json.loads(resp.json) if resp.json else {}

    def _unary(self, method, request, admin: bool = False):
        metadata = [("authorization", f"Bearer {self.token}")] if admin and self.token else None
        try:
            return method(request, timeout=self.timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise _error(e, self.target) from None
