"""Plain result types shared by the gRPC and HTTP clients, and the error they raise."""

from dataclasses import dataclass, field
from typing import List, Optional


class TesseraError(Exception):
    """A call the server refused or could not complete.

    `code` is the gRPC status name ("NOT_FOUND", "UNAVAILABLE", ...) for the gRPC client
    and the HTTP status (404, 503, ...) for the HTTP client.
    """

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0


@dataclass
class GenerateChunk:
    """One streamed step: new text and token ids. The last chunk has finish_reason and usage."""

    text: str
    token_ids: List[int]
    finish_reason: Optional[str] = None  # "stop", "length" or "abort" on the last chunk
    usage: Optional[Usage] = None
    request_id: str = ""


@dataclass
class GenerateResult:
    text: str
    token_ids: List[int]
    finish_reason: Optional[str]
    usage: Usage
    request_id: str = ""


@dataclass
class Tokens:
    ids: List[int]
    pieces: List[str] = field(default_factory=list)


@dataclass
class ModelInfo:
    id: str
    kind: str  # "base" or "lora"
    parent: str = ""
    max_model_len: int = 0
