"""A scripted OpenAI-compatible chat server on loopback, for tests through the real wire protocol.

Each request to ``POST /v1/chat/completions`` takes the next scripted reply of the queue
named by its ``model`` field (one model name per role keeps the roles' scripts apart)::

    with FakeOpenAI({"architect": [malformed_json(), text(design)]}) as server:
        client = OpenAIChatCompletionClient(model="architect", base_url=server.base_url, ...)

A reply is a text answer, or a fault: a body that is not JSON, a status code (429 with
``Retry-After``, 500), an empty answer, or a hang longer than the client's timeout. An
exhausted queue answers 500 ``script exhausted``, which the test sees in ``server.requests``.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FakeOpenAI",
    "Reply",
    "empty",
    "hang",
    "malformed_json",
    "rate_limited",
    "server_error",
    "text",
]


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    kind: str  # text | malformed | status | hang
    content: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    finish_reason: str = "stop"


def text(content: str, *, finish_reason: str = "stop") -> Reply:
    """A normal completion carrying ``content``."""
    return Reply("text", content, finish_reason=finish_reason)


def empty() -> Reply:
    """A completion whose content is the empty string."""
    return Reply("text", "")


def malformed_json() -> Reply:
    """A 200 whose body is not JSON at all."""
    return Reply("malformed", '{"id": "chatcmpl-broken", "choices": [ {"message": ')


def rate_limited(retry_after_s: float = 1.0) -> Reply:
    """A 429 with a ``Retry-After`` header."""
    return Reply("status", '{"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}', status=429,
                 headers={"Retry-After": f"{retry_after_s:g}"})


def server_error(status: int = 500) -> Reply:
    """A 5xx with an OpenAI-style error body."""
    return Reply("status", '{"error": {"message": "The server had an error", "type": "server_error"}}', status=status)


def hang(seconds: float, then: str = "too late") -> Reply:
    """Answer only after ``seconds`` (make it longer than the client's timeout)."""
    return Reply("hang", then, delay_s=seconds)


@dataclass
class Request:
    """What the server received."""

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any]
    time: float
    answered: str = ""


class FakeOpenAI:
    """The server; a context manager that starts it in a daemon thread on ``127.0.0.1``."""

    def __init__(self, script: dict[str, list[Reply]]):
        self.script = {model: list(replies) for model, replies in script.items()}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first (use it as a context manager)"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def remaining(self) -> dict[str, int]:
        """Scripted replies not yet consumed, per model."""
        with self._lock:
            return {m: len(r) for m, r in self.script.items() if r}

    def answered(self, model: str) -> list[str]:
        """What each request for ``model`` got (text, malformed, 429, 500, hang, exhausted)."""
        return [r.answered for r in self.requests if r.model == model]

    def _next(self, model: str) -> Reply | None:
        with self._lock:
            queue = self.script.get(model)
            return queue.pop(0) if queue else None

    def __enter__(self) -> FakeOpenAI:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return None

            def _send(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (a hang)
                    self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}))
                    return
                model = str(body.get("model", ""))
                request = Request(model=model, messages=list(body.get("messages", [])), body=body, time=time.time())
                with fake._lock:
                    fake.requests.append(request)
                reply = fake._next(model)
                if reply is None:
                    request.answered = "exhausted"
                    self._send(500, json.dumps({"error": {"message": f"script exhausted for model {model!r}"}}))
                    return
                if reply.kind == "malformed":
                    request.answered = "malformed"
                    self._send(200, reply.content)
                    return
                if reply.kind == "status":
                    request.answered = str(reply.status)
                    self._send(reply.status, reply.content, reply.headers)
                    return
                if reply.kind == "hang":
                    request.answered = "hang"
                    time.sleep(reply.delay_s)
                else:
                    request.answered = "text" if reply.content else "empty"
                prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.messages)
                completion_tokens = len(reply.content.split())
                self._send(200, json.dumps({
                    "id": f"chatcmpl-{len(fake.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply.content},
                                 "finish_reason": reply.finish_reason, "logprobs": None}],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                              "total_tokens": prompt_tokens + completion_tokens},
                }))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
