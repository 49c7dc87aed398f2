"""The Python clients against a real `tessera serve` on the default model: greedy output over
gRPC and HTTP (streamed and not) equals models/stories260k/expected_greedy.json.

Run by ctest (python_client_tests) with TESSERA_BINARY and TESSERA_SOURCE_DIR set, or by hand:
  TESSERA_BINARY=build/bin/tessera PYTHONPATH=clients/python \
      /usr/bin/python3 -m unittest discover -s tests/clients/python -v
"""

import json
import os
import select
import signal
import subprocess
import time
import unittest

SOURCE_DIR = os.environ.get("TESSERA_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..")))
BINARY = os.environ.get("TESSERA_BINARY", os.path.join(SOURCE_DIR, "build", "bin", "tessera"))

try:
    import grpc  # noqa: F401
    HAVE_GRPC = True
except ImportError:
    HAVE_GRPC = False

from tessera_client import HttpClient, TesseraError  # noqa: E402


def golden_cases():
    with open(os.path.join(SOURCE_DIR, "models", "stories260k", "expected_greedy.json")) as f:
        cases = json.load(f)["cases"]
    return [(c["prompt"], c["generated_ids"], c["text"][len(c["prompt"]):]) for c in cases]


class Server:
    """`tessera serve --port 0 --grpc-port 0`, with the ports read from its stdout."""

    def __init__(self, extra=()):
        self.proc = subprocess.Popen([BINARY, "serve", "--port", "0", "--grpc-port", "0", *extra],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.http_port = self.grpc_port = None
        out = b""
        deadline = time.monotonic() + 60
        while self.http_port is None or self.grpc_port is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                self.stop()
                raise RuntimeError(f"server did not start: {out!r}")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                self.stop()
                raise RuntimeError(f"server exited: {out!r}")
            out += chunk
            for line in out.decode().splitlines():
                if line.startswith("listening http "):
                    self.http_port = int(line.rsplit(":", 1)[1])
                if line.startswith("listening grpc "):
                    self.grpc_port = int(line.rsplit(":", 1)[1])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = Server()
        cls.http = HttpClient(f"http://127.0.0.1:{cls.server.http_port}")
        cls.cases = golden_cases()

    @classmethod
    def tearDownClass(cls):
        cls.server.proc.stdout.close()
        assert cls.server.stop() == 0

    @unittest.skipUnless(HAVE_GRPC, "python3-grpcio is not installed: skipping the gRPC client test")
    def test_grpc_greedy_generate_streamed_and_not_matches_expected_greedy(self):
        from tessera_client import GrpcClient
        with GrpcClient(f"127.0.0.1:{self.server.grpc_port}") as c:
            for prompt, ids, text in self.cases:
                with self.subTest(prompt=prompt):
                    r = c.generate(prompt, max_tokens=len(ids), temperature=0)
                    self.assertEqual(r.text, text)
                    self.assertEqual(r.token_ids, ids)
                    self.assertEqual(r.finish_reason, "length")
                    self.assertEqual(r.usage.completion_tokens, len(ids))
                    chunks = list(c.generate(prompt, max_tokens=len(ids), temperature=0, stream=True))
                    self.assertGreater(len(chunks), 1)
                    self.assertEqual("".join(ch.text for ch in chunks), text)
                    self.assertEqual([i for ch in chunks for i in ch.token_ids], ids)
                    self.assertEqual(chunks[-1].finish_reason, "length")
                    self.assertTrue(all(ch.finish_reason is None for ch in chunks[:-1]))

    @unittest.skipUnless(HAVE_GRPC, "python3-grpcio is not installed: skipping the gRPC client test")
    def test_grpc_tokenize_models_and_errors(self):
        from tessera_client import GrpcClient
        with GrpcClient(f"127.0.0.1:{self.server.grpc_port}") as c:
            # The golden prompt ids are BOS + the prompt's sentencepiece ids.
            with open(os.path.join(SOURCE_DIR, "models", "stories260k", "expected_greedy.json")) as f:
                case = next(x for x in json.load(f)["cases"] if x["prompt"])
            self.assertEqual(c.tokenize(case["prompt"]).ids, case["prompt_ids"])
            self.assertEqual(c.tokenize(case["prompt"], add_special_tokens=False).ids, case["prompt_ids"][1:])
            models = c.list_models()
            self.assertEqual([(m.id, m.kind) for m in models], [(self.http.models()[0]["id"], "base")])
            with self.assertRaises(TesseraError) as e:
                c.generate("x", model="no-such-model")
            self.assertEqual(e.exception.code, "NOT_FOUND")
        with GrpcClient("127.0.0.1:1") as dead:
            with self.assertRaises(TesseraError) as e:
                dead.list_models()
            self.assertEqual(e.exception.code, "UNAVAILABLE")
            self.assertIn("127.0.0.1:1", e.exception.message)

    def test_http_completions_streamed_and_not_match_expected_greedy(self):
        for prompt, ids, text in self.cases:
            with self.subTest(prompt=prompt):
                r = self.http.completions(prompt, max_tokens=len(ids), temperature=0)
                self.assertEqual(r["choices"][0]["text"], text)
                self.assertEqual(r["usage"]["completion_tokens"], len(ids))
                chunks = list(self.http.completions(prompt, max_tokens=len(ids), temperature=0, stream=True))
                self.assertGreater(len(chunks), 1)
                self.assertEqual("".join(ch["choices"][0]["text"] for ch in chunks), text)
                self.assertEqual(chunks[-1]["choices"][0]["finish_reason"], "length")

    def test_http_chat_stream_equals_whole_and_models_metrics(self):
        messages = [{"role": "user", "content": "Tell me a story"}]
        whole = self.http.chat(messages, max_tokens=12, temperature=0)
        content = whole["choices"][0]["message"]["content"]
        self.assertTrue(content)
        chunks = list(self.http.chat(messages, max_tokens=12, temperature=0, stream=True,
                                     stream_options={"include_usage": True}))
        streamed = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks if ch["choices"])
        self.assertEqual(streamed, content)
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 12)
        self.assertEqual(self.http.models()[0]["object"], "model")
        self.assertIn("# TYPE", self.http.metrics())
        self.assertTrue(self.http.health())
        self.assertTrue(self.http.ready())

    def test_http_errors_raise_with_status_and_server_message(self):
        with self.assertRaises(TesseraError) as e:
            self.http.completions("x", model="no-such-model", stream=True)
        self.assertEqual(e.exception.code, 404)
        self.assertIn("does not exist", e.exception.message)
        with self.assertRaises(TesseraError) as e:
            self.http.completions("x", max_tokens=100000)
        self.assertEqual(e.exception.code, 400)
        self.assertIn("maximum context length", e.exception.message)
        with self.assertRaises(TesseraError) as e:
            HttpClient("http://127.0.0.1:1/v1").models()
        self.assertEqual(e.exception.code, "UNAVAILABLE")


if __name__ == "__main__":
    unittest.main()
