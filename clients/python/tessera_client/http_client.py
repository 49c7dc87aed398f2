"""HttpClient: tessera's OpenAI-compatible HTTP API with the standard library only
(http.client), including server-sent-event streaming."""

import http.client
import json
from typing import Any, Dict, Iterator, List, Optional, Union
from urllib.parse import urlsplit

from .types import TesseraError


class HttpClient:
    """A client of the OpenAI-compatible API (/v1/completions, /v1/chat/completions,
    /v1/models) and of /metrics, /health and /ready.

    >>> c = HttpClient("http://127.0.0.1:8000")
    >>> c.completions("Once upon a time", max_tokens=32, temperature=0)["choices"][0]["text"]
    >>> for chunk in c.chat([{"role": "user", "content": "Hi"}], stream=True):
    ...     print(chunk["choices"][0]["delta"].get("content", ""), end="")

    `base_url` may end in /v1 (as the OpenAI SDK's does). `model` is the default model
    name; when None the server's first listed model is used. `api_key` is sent as a
    bearer token.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", api_key: Optional[str] = None,
                 timeout: Optional[float] = 600.0, model: Optional[str] = None):
        parts = urlsplit(base_url if "://" in base_url else "http://" + base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"base_url must be http(s)://HOST[:PORT], got {base_url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        prefix = parts.path.rstrip("/")
        self._prefix = prefix[:-3] if prefix.endswith("/v1") else prefix
        self.api_key = api_key
        self.timeout = timeout
        self.model = model

    # OpenAI API

    def completions(self, prompt: Union[str, List[str]], model: Optional[str] = None,
                    max_tokens: Optional[int] = None, temperature: Optional[float] = None,
                    stream: bool = False, **params: Any) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """POST /v1/completions. Returns the response object, or with stream=True an
        iterator of the streamed chunk objects (ending at [DONE]). Extra keyword
        arguments (top_p, seed, stop, n, logprobs, stream_options, ...) go in the body."""
        body = self._body(model, max_tokens, temperature, stream, params)
        body["prompt"] = prompt
        return self._generate("/v1/completions", body, stream)

    def chat(self, messages: List[Dict[str, Any]], model: Optional[str] = None,
             max_tokens: Optional[int] = None, temperature: Optional[float] = None,
             stream: bool = False, **params: Any) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """POST /v1/chat/completions; as completions() but with a list of messages."""
        body = self._body(model, max_tokens, temperature, stream, params)
        body["messages"] = messages
        return self._generate("/v1/chat/completions", body, stream)

    def models(self) -> List[Dict[str, Any]]:
        """The served model and its loaded LoRA adapters (the "data" of GET /v1/models)."""
        return json.loads(self._request("GET", "/v1/models"))["data"]

    def metrics(self) -> str:
        """The Prometheus text exposition of GET /metrics."""
        return self._request("GET", "/metrics").decode("utf-8")

    def health(self) -> bool:
        """True when the server process answers /health."""
        try:
            self._request("GET", "/health")
            return True
        except (TesseraError, OSError):
            return False

    def ready(self) -> bool:
        """True when the server can serve (GET /ready is 200, not 503 while starting or draining)."""
        try:
            self._request("GET", "/ready")
            return True
        except TesseraError:
            return False

    # Plumbing

    def _body(self, model, max_tokens, temperature, stream, params) -> Dict[str, Any]:
        body: Dict[str, Any] = {"model": model or self._default_model(), "stream": stream}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        body.update(params)
        return body

    def _default_model(self) -> str:
        if self.model is None:
            self.model = self.models()[0]["id"]
        return self.model

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.timeout)

    def _headers(self, json_body: bool) -> Dict[str, str]:
        headers = {"Accept": "application/json, text/event-stream"}
        if json_body:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _open(self, method: str, path: str, body: Optional[Dict[str, Any]]):
        conn = self._connection()
        try:
            data = json.dumps(body).encode("utf-8") if body is not None else None
            conn.request(method, self._prefix + path, body=data, headers=self._headers(data is not None))
            resp = conn.getresponse()
        except OSError as e:
            conn.close()
            raise TesseraError("UNAVAILABLE",
                               f"cannot reach the tessera server at {self._host}:{self._port}: {e}") from None
        if resp.status >= 400:
            payload = resp.read()
            conn.close()
            raise TesseraError(resp.status, _error_message(payload))
        return conn, resp

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> bytes:
        conn, resp = self._open(method, path, body)
        try:
            return resp.read()
        finally:
            conn.close()

    def _generate(self, path: str, body: Dict[str, Any], stream: bool):
        if not stream:
            return json.loads(self._request("POST", path, body))
        # Opened before returning so admission errors (400, 404, 429, 503) raise here.
        conn, resp = self._open("POST", path, body)
        return _sse_objects(conn, resp)


def _error_message(payload: bytes) -> str:
    try:
        return json.loads(payload)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return payload.decode("utf-8", "replace").strip()


def _sse_objects(conn, resp) -> Iterator[Dict[str, Any]]:
    """Parses a text/event-stream body into the JSON object of each event until [DONE].
    Closing the iterator early closes the connection, which cancels the request."""
    try:
        data: List[str] = []
        while True:
            raw = resp.readline()
            if not raw:
                return
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("data:"):
                data.append(line[5:][1:] if line[5:6] == " " else line[5:])
                continue
            if line or not data:
                continue  # comments, other fields, or a stray blank line
            event, data = "\n".join(data), []
            if event == "[DONE]":
                return
            obj = json.loads(event)
            if "error" in obj:
                err = obj["error"]
                raise TesseraError(err.get("code", "error"), err.get("message", event))
            yield obj
    finally:
        conn.close()
