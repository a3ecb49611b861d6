"""A scripted loopback LLM server speaking the OpenAI and Anthropic wire formats.

Each model name has a queue of scripted replies (status, headers, body or a delay); once the
queue is empty the model answers 200 with a deterministic completion. Every request is
recorded with its arrival time, so tests can assert on retry spacing and on request bodies.

A request with ``"stream": true`` is answered as the provider streams: OpenAI's
``chat.completion.chunk`` server-sent events (the usage in a last chunk when
``stream_options.include_usage`` is set, then ``[DONE]``), or Anthropic's ``message_start`` ...
``message_stop`` events. The text goes out word by word, ``token_delay_s`` apart; a scripted
reply can break the stream after some words (a reset connection or an error event).
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    text: str | None = None
    delay_s: float = 0.0
    error_message: str = "scripted error"
    reset: bool = False
    """Close the connection with a TCP reset (after ``delay_s``) instead of answering."""
    usage: dict[str, Any] | None = None
    """Usage to report instead of the default (merged into the format's usage object)."""
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None
    """Ask for these tools (wire name, arguments) in the format's own way: OpenAI
    ``message.tool_calls`` (arguments as JSON text) or Anthropic ``tool_use`` blocks."""
    token_delay_s: float | None = None
    """Seconds between two words (default: the stub's ``default_token_delay_s``): streamed
    words are sent that far apart; a plain answer waits as long as streaming it would take."""
    break_after: int | None = None
    """Streaming: after this many words, reset the connection (or send ``stream_error``)."""
    stream_error: dict[str, Any] | None = None
    """Streaming: the error object sent as an error event at ``break_after`` instead of a
    reset, e.g. ``{"type": "overloaded_error", "message": "Overloaded"}``."""


@dataclass
class Recorded:
    path: str
    model: str
    body: dict[str, Any]
    at: float
    status: int


class StubLLM:
    """Run with ``with StubLLM() as stub:``; ``stub.base_url`` ends in ``/v1``.

    ``default_delay_s`` delays every unscripted reply; ``in_flight``/``max_in_flight`` count
    concurrent requests (for limit tests); with ``usage_from_body`` the reported prompt tokens
    are the request's message characters / 4 (like a real tokenizer on English) instead of 13.
    """

    def __init__(
        self,
        default_delay_s: float = 0.0,
        usage_from_body: bool = False,
        echo: bool = False,
        default_token_delay_s: float = 0.0,
        default_text: str | None = None,
    ) -> None:
        self._scripts: dict[str, deque[Reply]] = defaultdict(deque)
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self.default_delay_s = default_delay_s
        self.default_token_delay_s = default_token_delay_s
        """Seconds between two words of unscripted (and unset) replies (see ``Reply``)."""
        self.default_text = default_text
        """The text of unscripted replies (default: a description of the request)."""
        self.usage_from_body = usage_from_body
        self.echo = echo
        """Answer with the request's last user message (unscripted replies)."""
        self.in_flight = 0
        self.max_in_flight = 0
        self.call_ids = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._send(200, {}, {"object": "list", "data": [{"id": "stub"}]})

            def do_POST(self) -> None:
                with stub._lock:
                    stub.in_flight += 1
                    stub.max_in_flight = max(stub.max_in_flight, stub.in_flight)
                try:
                    self._post()
                finally:
                    with stub._lock:
                        stub.in_flight -= 1

            def _post(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                model = body.get("model", "")
                with stub._lock:
                    queue = stub._scripts[model]
                    reply = queue.popleft() if queue else Reply(delay_s=stub.default_delay_s)
                    stub.requests.append(
                        Recorded(self.path, model, body, time.monotonic(), reply.status)
                    )
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                if reply.reset:
                    # SO_LINGER 0: close() sends RST, the client sees "connection reset".
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.close_connection = True
                    self.connection.close()
                    return
                if reply.status != 200:
                    self._send(
                        reply.status,
                        reply.headers,
                        {"error": {"message": reply.error_message, "type": "stub_error"}},
                    )
                    return
                text = reply.text if reply.text is not None else stub.default_text
                text = text if text is not None else _default_text(body)
                if stub.echo and reply.text is None:
                    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
                    text = str(users[-1]["content"]) if users else ""
                prompt_tokens = 13
                if stub.usage_from_body:
                    prompt_tokens = len(json.dumps(body.get("messages", []))) // 4 + 1
                calls = reply.tool_calls or []
                with stub._lock:
                    stub.call_ids += len(calls)
                    first_id = stub.call_ids - len(calls) + 1
                delay = (
                    reply.token_delay_s
                    if reply.token_delay_s is not None
                    else stub.default_token_delay_s
                )
                if body.get("stream"):
                    stream = _Stream(self, reply, delay)
                    try:
                        if self.path.endswith("/messages"):
                            stream.anthropic(model, text, calls, first_id)
                        else:
                            usage = {
                                "prompt_tokens": prompt_tokens,
                                "completion_tokens": 5,
                                "total_tokens": prompt_tokens + 5,
                                **(reply.usage or {}),
                            }
                            stream.openai(model, text, calls, first_id, usage, body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                    return
                if delay:  # generation takes as long as when streamed
                    time.sleep(delay * max(len(_words(text)) - 1, 0))
                if self.path.endswith("/messages"):
                    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
                    content += [
                        {"type": "tool_use", "id": f"toolu_{first_id + i}", "name": n, "input": a}
                        for i, (n, a) in enumerate(calls)
                    ]
                    payload: dict[str, Any] = {
                        "id": "msg_stub",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": content,
                        "stop_reason": "tool_use" if calls else "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 11, "output_tokens": 7, **(reply.usage or {})},
                    }
                else:
                    payload = {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": model,
                        "choices": [
                            {
                                "index": 0,
                                "message": {
                                    "role": "assistant",
                                    "content": None if calls else text,
                                    **(
                                        {
                                            "tool_calls": [
                                                {
                                                    "id": f"call_{first_id + i}",
                                                    "type": "function",
                                                    "function": {
                                                        "name": n,
                                                        "arguments": json.dumps(a),
                                                    },
                                                }
                                                for i, (n, a) in enumerate(calls)
                                            ]
                                        }
                                        if calls
                                        else {}
                                    ),
                                },
                                "finish_reason": "tool_calls" if calls else "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": 5,
                            "total_tokens": prompt_tokens + 5,
                            **(reply.usage or {}),
                        },
                    }
                self._send(200, reply.headers, payload)

            def _send(self, status: int, headers: dict[str, str], payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def script(self, model: str, *replies: Reply) -> None:
        with self._lock:
            self._scripts[model].extend(replies)

    def for_model(self, model: str) -> list[Recorded]:
        return [r for r in self.requests if r.model == model]

    def __enter__(self) -> StubLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Broken(Exception):
    """The scripted break of a stream happened (the connection is closed)."""


class _Stream:
    """Writes one streamed answer as server-sent events, word by word."""

    def __init__(self, handler: BaseHTTPRequestHandler, reply: Reply, delay_s: float) -> None:
        self._handler = handler
        self._reply = reply
        self._delay_s = delay_s
        self._words = 0
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("cache-control", "no-cache")
        for k, v in reply.headers.items():
            handler.send_header(k, v)
        handler.close_connection = True  # HTTP/1.0: the body ends when the connection does
        handler.end_headers()

    def event(self, data: dict[str, Any] | str, name: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        head = f"event: {name}\n" if name else ""
        self._handler.wfile.write(f"{head}data: {text}\n\n".encode())
        self._handler.wfile.flush()

    def word(self) -> None:
        """Before each word: wait, and break the stream where scripted."""
        if self._words and self._delay_s:
            time.sleep(self._delay_s)
        if self._reply.break_after is not None and self._words >= self._reply.break_after:
            if self._reply.stream_error is not None:
                self.event({"type": "error", "error": self._reply.stream_error}, "error")
                self._handler.connection.close()
            else:
                linger = struct.pack("ii", 1, 0)
                self._handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self._handler.connection.close()
            raise _Broken
        self._words += 1

    def openai(
        self,
        model: str,
        text: str,
        calls: list[tuple[str, dict[str, Any]]],
        first_id: int,
        usage: dict[str, Any],
        body: dict[str, Any],
    ) -> None:
        base = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            self.event({**base, "choices": [choice]})

        try:
            chunk({"role": "assistant", "content": ""})
            for piece in [] if calls else _words(text):
                self.word()
                chunk({"content": piece})
            for i, (name, arguments) in enumerate(calls):
                self.word()
                call = {"id": f"call_{first_id + i}", "type": "function"}
                chunk({"tool_calls": [{"index": i, **call, "function": {"name": name}}]})
                encoded = json.dumps(arguments)
                for part in (encoded[: len(encoded) // 2], encoded[len(encoded) // 2 :]):
                    chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]})
            chunk({}, "tool_calls" if calls else "stop")
            if (body.get("stream_options") or {}).get("include_usage"):
                self.event({**base, "choices": [], "usage": usage})
            self.event("[DONE]")
        except _Broken:
            return

    def anthropic(
        self, model: str, text: str, calls: list[tuple[str, dict[str, Any]]], first_id: int
    ) -> None:
        usage = {"input_tokens": 11, "output_tokens": 7, **(self._reply.usage or {})}
        output_tokens = usage.pop("output_tokens")
        message: dict[str, Any] = {
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        try:
            self.event({"type": "message_start", "message": message}, "message_start")
            block = {"type": "text", "text": ""}
            self.event(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            )
            for piece in _words(text):
                self.word()
                delta = {"type": "text_delta", "text": piece}
                self.event(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            self.event({"type": "content_block_stop", "index": 0}, "content_block_stop")
            for i, (name, arguments) in enumerate(calls, 1):
                self.word()
                use: dict[str, Any] = {"type": "tool_use", "id": f"toolu_{first_id + i - 1}"}
                use.update(name=name, input={})
                start = {"type": "content_block_start", "index": i, "content_block": use}
                self.event(start, "content_block_start")
                delta = {"type": "input_json_delta", "partial_json": json.dumps(arguments)}
                self.event(
                    {"type": "content_block_delta", "index": i, "delta": delta},
                    "content_block_delta",
                )
                self.event({"type": "content_block_stop", "index": i}, "content_block_stop")
            stop = {"stop_reason": "tool_use" if calls else "end_turn", "stop_sequence": None}
            self.event(
                {"type": "message_delta", "delta": stop, "usage": {"output_tokens": output_tokens}},
                "message_delta",
            )
            self.event({"type": "message_stop"}, "message_stop")
        except _Broken:
            return


def _words(text: str) -> list[str]:
    """``text`` as streamed pieces: each word with the whitespace after it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


def _default_text(body: dict[str, Any]) -> str:
    messages = body.get("messages", [])
    system = body.get("system") or next(
        (m["content"] for m in messages if m.get("role") == "system"), ""
    )
    return f"stub answer ({len(json.dumps(messages))} chars in; system: {str(system)[:30]})"
