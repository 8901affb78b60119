"""A scripted OpenAI-compatible chat server on loopback, for tests through the real wire protocol.

Each request to ``POST /v1/chat/completions`` takes the next scripted reply of the queue
named by its ``model`` field (one model name per role keeps the roles' scripts apart)::

    with FakeOpenAI({"architect": [malformed_json(), text(design)]}) as server:
        client = OpenAIChatCompletionClient(model="architect", base_url=server.base_url, ...)

A reply is a text answer, or a fault: a body that is not JSON, a status code (429 with or
without ``Retry-After``, 500), an empty answer, or a hang longer than the client's timeout. An
exhausted queue answers 500 ``script exhausted``, which the test sees in ``server.requests``.

With ``responder=`` (e.g. a :class:`FlakyModel`), a model whose queue is empty or absent is
answered by ``responder(request)`` instead: a seeded mid-quality model that answers each role
from its request, with a chosen share of bad replies (NameErrors, shape bugs, wrong permutes,
missing packages, wrong function names, prose-only replies, truncated code with
``finish_reason == "length"``, JSON with trailing commas, an endless loop in ``build_training``).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = [
    "FAULTS",
    "FakeOpenAI",
    "FlakyModel",
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


def rate_limited(retry_after_s: float | None = 1.0) -> Reply:
    """A 429 with a ``Retry-After`` header; with ``None``, a 429 without one (the client chooses the wait)."""
    headers = {"Retry-After": f"{retry_after_s:g}"} if retry_after_s is not None else {}
    return Reply("status", '{"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}', status=429,
                 headers=headers)


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

    def __init__(self, script: dict[str, list[Reply]], responder: Callable[[Request], Reply] | None = None):
        self.script = {model: list(replies) for model, replies in script.items()}
        self.responder = responder
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
                if reply is None and fake.responder is not None:
                    with fake._lock:  # seeded: one answer at a time, in arrival order
                        reply = fake.responder(request)
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


# --- a seeded, flaky mid-quality model --------------------------------------------------------------

FAULTS: dict[str, tuple[str, ...]] = {
    "architect": ("prose_only", "truncated", "trailing_commas", "name_error", "shape_bug", "wrong_permute",
                  "endless_loop", "missing_package"),
    "data_engineer": ("name_error", "missing_package", "wrong_function", "prose_only", "truncated", "wrong_permute"),
    "model_engineer": ("name_error", "missing_package", "wrong_function", "prose_only", "truncated", "shape_bug"),
    "training_engineer": ("name_error", "missing_package", "wrong_function", "prose_only", "truncated",
                          "endless_loop"),
    "analyst": ("prose_only", "truncated", "trailing_commas", "invented_knob"),
    "summarizer": ("wrong_numbers", "prose_only"),
}
"""The bad replies each role's model makes (runtime bugs included: shape bug, permute, endless loop)."""

_CHANGES: list[tuple[str, dict[str, object]]] = [
    ("training_engineer", {"LR": 0.002}), ("training_engineer", {"LR": 0.004}),
    ("training_engineer", {"LABEL_SMOOTHING": 0.05}), ("training_engineer", {"WEIGHT_DECAY": 0.02}),
    ("training_engineer", {"WARMUP_EPOCHS": 0.5}), ("model_engineer", {"WIDTH": 12}),
    ("model_engineer", {"DROPOUT": 0.2}), ("data_engineer", {"ERASING": 0.1}),
    ("data_engineer", {"MIX_PROB": 0.3}), ("model_engineer", {"WIDTH": 6}),
]


def _request_of(request: Request) -> dict[str, object]:
    for m in request.messages:
        content = str(m.get("content", ""))
        match = re.search(r"<automodel-request>\n(.*)\n</automodel-request>", content, re.S)
        if match:
            return dict(json.loads(match.group(1)))
    return {}


def _dict(value: object) -> dict[str, object]:
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _set(code: str, knobs: dict[str, object]) -> str:
    for name, value in knobs.items():
        code = re.sub(rf"^{name} = [^#\n]*", f"{name} = {value!r}", code, count=1, flags=re.M)
    return code


def _inject(fault: str, component: str, code: str) -> str:
    """``code`` with a runtime or static bug of kind ``fault``."""
    if fault == "name_error":
        return code.replace("INTERFACE_VERSION = 1", "INTERFACE_VERSION = 1\nSCALE = undefined_scale * 2", 1)
    if fault == "missing_package":
        return "import fancyaug  # a package that is not installed\n" + code
    if fault == "wrong_function":
        return re.sub(r"^def build_(data|model|training)\(", r"def make_\1(", code, count=1, flags=re.M)
    if fault == "shape_bug" and component == "model":
        return code.replace("        return self.head(self.features(x))", "        return self.head(self.features(x)[:, :5])")
    if fault == "wrong_permute" and component == "data":
        return code.replace("            x = ops.random_erasing(x, p=ERASING)\n        return x\n",
                            "            x = ops.random_erasing(x, p=ERASING)\n        return x.permute(0, 2, 3, 1)\n")
    if fault == "endless_loop" and component == "training":
        return code.replace("    total = epochs * spec.steps_per_epoch\n",
                            "    total = epochs * spec.steps_per_epoch\n    while total > 0:\n        total += 1\n")
    return code


@dataclass
class FlakyModel:
    """Answers every role like a mid-quality model: good replies, and a ``bad_rate`` share of bad ones.

    Seeded: the same requests in the same order get the same answers. ``counts`` tallies what was sent.
    """

    seed: int = 0
    bad_rate: float = 0.5
    references: dict[str, str] = field(default_factory=dict)
    """The reference files (component -> source), the basis of good code."""
    only: tuple[str, ...] = ()
    """Restrict the bad replies to these kinds (e.g. the runtime bugs); a role with none of them answers well."""
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def __call__(self, request: Request) -> Reply:
        role = request.model
        req = _request_of(request)
        context = _dict(req.get("context"))
        kinds = [k for k in FAULTS.get(role, ("prose_only",)) if not self.only or k in self.only]
        bad = self.rng.random() < self.bad_rate
        fault = self.rng.choice(kinds) if bad and kinds else ""
        self.counts[f"{role}:{fault or 'good'}"] += 1
        if fault == "prose_only":
            return text("I would make the model a bit better by tuning the learning rate and adding augmentation.")
        if role == "architect":
            return self._architect(fault, context)
        if role.endswith("_engineer"):
            return self._engineer(role.split("_")[0], context, fault)
        if role == "analyst":
            return self._analyst(context, fault)
        return self._summary(context, fault)

    def _rebuild(self, component: str, current: str) -> str:
        """``current``'s knob values on the reference structure: how a decent model repairs a file."""
        code = self.references[component]
        for name, value in re.findall(r"^([A-Z_]+) = ([^#\n]+)", current, re.M):
            code = re.sub(rf"^{name} = [^#\n]*", f"{name} = {value.strip()}", code, count=1, flags=re.M)
        return code

    def _architect(self, fault: str, context: dict[str, object]) -> Reply:
        if context.get("phase") == "escalation":  # rewrite the failed files from the reference, keeping the knobs
            failed = _dict(context.get("failed_files"))
            files = {c: self._rebuild(c, str(failed.get(c) or self.references[c])) for c in ("data", "model", "training")}
        else:
            files = {"data": _set(self.references["data"], {"HFLIP": False, "TTA_HFLIP": False, "BATCH_SIZE": 128}),
                     "model": _set(self.references["model"], {"ARCH": "small_cnn", "WIDTH": 8}),
                     "training": _set(self.references["training"], {"MAX_EPOCHS": 4})}
        victim = {"shape_bug": "model", "wrong_permute": "data", "endless_loop": "training"}.get(fault) \
            or self.rng.choice(["data", "model", "training"])
        if fault:
            files[victim] = _inject(fault, victim, files[victim])
        head = '{"summary": "small CNN, no flips (digits)", "rationale": ["orientation carries the label"], ' \
               '"decisions": {"backbone": "small_cnn"}}'
        if fault == "trailing_commas":
            head = head.replace('"]', '",]').replace('"}}', '",},}')
        body = f"```json\n{head}\n```\n" + "\n".join(f"```python\n# {c}.py\n{code}```" for c, code in files.items())
        if fault == "truncated":
            return text(body[: len(body) * 2 // 3], finish_reason="length")
        return text(body)

    def _engineer(self, component: str, context: dict[str, object], fault: str) -> Reply:
        current = str(context.get("current_code") or self.references[component])
        phase = context.get("phase")
        change = "kept the file"
        if phase == "repair":  # a decent model repairs by going back to the known-good structure
            code = self._rebuild(component, current)
            change = "rewrote the broken part from the reference structure"
            error = _dict(context.get("error"))
            if error.get("error_type") == "Infeasible" and component == "model":  # too slow: a narrower network
                width = re.search(r"^WIDTH = (\d+)", code, re.M)
                code = _set(code, {"WIDTH": max(4, int(width.group(1)) // 2 if width and int(width.group(1)) else 8)})
                change = "halved WIDTH so an epoch fits the budget"
        elif phase == "revision":
            wanted = _dict(_dict(context.get("feedback")).get("knobs")) or {"DROPOUT": 0.15}
            code = _set(current, wanted)
            change = f"set {wanted}"
        else:
            code = current
        code = _inject(fault, component, code) if fault else code
        body = f"```python\n{code}```\nCHANGE: {change}"
        if fault == "truncated":
            lines = code.splitlines()
            return text("```python\n" + "\n".join(lines[: len(lines) * 3 // 4]) + "\n```", finish_reason="length")
        return text(body)

    def _analyst(self, context: dict[str, object], fault: str) -> Reply:
        tried = set(map(str, _list(context.get("tried"))))
        options = [c for c in _CHANGES if not any(k in t for k in c[1] for t in tried)] or _CHANGES
        target, knobs = self.rng.choice(options)
        if fault == "invented_knob":
            target, knobs = "training_engineer", {"LEARNING_RATE": 0.01}
        body = json.dumps({"target": target, "diagnosis": "room to improve", "change": f"set {knobs}",
                           "expected_effect": "higher validation accuracy", "knobs": knobs})
        if fault == "trailing_commas":
            body = body[:-1] + ",}"
        if fault == "truncated":
            return text("```json\n" + body[: len(body) // 2], finish_reason="length")
        return text(f"```json\n{body}\n```")

    def _summary(self, context: dict[str, object], fault: str) -> Reply:
        report = _dict(context.get("report"))
        acc = report.get("val_accuracy")
        epochs = len(_list(report.get("epochs")))
        if fault == "wrong_numbers":
            return text(f"The attempt reached {0.9931 if acc else 0.5:.4f} after {epochs + 6} epochs.")
        outcome = f"reached {acc:.4f} in {epochs} epochs" if isinstance(acc, float) else f"ended {report.get('status')}"
        return text(f"Attempt {report.get('iteration')} ({report.get('change', '')[:80]}) {outcome}.")
