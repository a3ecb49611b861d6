"""Loopback stubs of the registry's provider wire formats: Azure OpenAI, Bedrock, Gemini.

One threaded HTTP server answers:

- ``POST /openai/deployments/<deployment>/chat/completions?api-version=...`` (Azure OpenAI:
  the deployment in the path, the ``api-key`` header or an ``Authorization: Bearer`` token of
  ``bearer_tokens``);
- ``POST .../chat/completions`` (OpenAI-compatible, Gemini's ``/v1beta/openai/``), with an
  ``Authorization: Bearer <key>`` header;
- ``POST /model/<modelId>/converse`` (Bedrock Converse JSON; SigV4-signed by boto3).

Each path answers from its queue of scripted :class:`StubReply` (status, headers, JSON body),
then with a default success in that path's format. A chat completion asked with
``"stream": true`` is answered as OpenAI streams (chunks, a usage chunk, ``[DONE]``). Every
request is recorded (path, query, headers, body).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class StubReply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    """JSON body; ``None``: the path's default success."""


@dataclass
class StubRequest:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: dict[str, Any]


def bedrock_error(code: str, status: int, message: str = "scripted", **headers: str) -> StubReply:
    """An AWS JSON-protocol error as Bedrock sends it (``x-amzn-ErrorType`` and ``message``)."""
    return StubReply(
        status=status,
        headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/", **headers},
        body={"message": message},
    )


class ProviderStub:
    """The stub server; ``key`` is the API key it accepts (Azure and OpenAI-style paths)."""

    def __init__(self, key: str = "stub-key", text: str = "hello from the stub") -> None:
        self.key = key
        self.text = text
        self.requests: list[StubRequest] = []
        self.bearer_tokens: set[str] = set()
        """Entra ID tokens the Azure paths accept (``Authorization: Bearer``)."""
        self._scripts: dict[str, deque[StubReply]] = defaultdict(deque)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw else {}
                request = StubRequest(
                    path=unquote(url.path),
                    query=parse_qs(url.query),
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body,
                )
                stub.requests.append(request)
                queue = stub._scripts[request.path]
                reply = queue.popleft() if queue else StubReply()
                if reply.status == 200 and reply.body is None:
                    if not stub._authorized(request):
                        reply = StubReply(401, body={"error": {"message": "bad key"}})
                    elif request.path.endswith("/converse"):
                        reply = StubReply(body=stub._converse(request))
                    elif body.get("stream"):
                        self._stream(body)
                        return
                    else:
                        reply = StubReply(body=stub._chat(body))
                self._send(reply)

            def _send(self, reply: StubReply) -> None:
                data = json.dumps(reply.body if reply.body is not None else {}).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, body: dict[str, Any]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                words = stub.text.split(" ")
                base = {"id": "c1", "object": "chat.completion.chunk", "created": 1}
                base["model"] = str(body.get("model", ""))
                for i, word in enumerate(words):
                    piece = word if i == 0 else " " + word
                    chunk = {
                        **base,
                        "choices": [{"index": 0, "delta": {"content": piece}}],
                    }
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                usage = {
                    **base,
                    "choices": [],
                    "usage": {"prompt_tokens": 11, "completion_tokens": len(words)},
                }
                for chunk in (done, usage):
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def script(self, path: str, *replies: StubReply) -> None:
        """Queue replies for requests to ``path`` (without the query string)."""
        self._scripts[path].extend(replies)

    def _authorized(self, request: StubRequest) -> bool:
        if request.path.endswith("/converse"):
            return request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256")
        if request.path.startswith("/openai/deployments/"):
            bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
            return request.headers.get("api-key") == self.key or bearer in self.bearer_tokens
        return request.headers.get("authorization") == f"Bearer {self.key}"

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 1,
            "model": str(body.get("model", "")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": self.text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15},
        }

    def _converse(self, request: StubRequest) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": [{"text": self.text}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 12, "outputTokens": 5, "totalTokens": 17},
            "metrics": {"latencyMs": 3},
        }

    def __enter__(self) -> ProviderStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
