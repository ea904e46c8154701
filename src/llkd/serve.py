"""An OpenAI-compatible HTTP server over a local causal LM, so one teacher can serve many machines.

It speaks enough of the chat-completions API for the ``openai`` teacher backend (and for any
other OpenAI client): ``messages``, ``max_tokens``, ``temperature``, ``n``, ``seed``,
``logprobs`` and ``top_logprobs``. Decoding is a plain loop over the model with a KV cache:
greedy at temperature 0, sampling otherwise; the ``n`` choices of one request share the
prompt's forward pass. Requests are served concurrently by threads but the model runs one
request at a time (a lock), which is what a single CPU/GPU model can do anyway.

Endpoints: ``GET /health``, ``GET /v1/models``, ``POST /v1/chat/completions``.

Guards, all applied before a request body is read: the route, an optional API key (``Bearer``;
``/health`` stays open for liveness probes), and a cap on ``Content-Length`` (a 10 MB body is
refused with 413, not tokenised first). A body without a valid length is a 400, never a wait.
A connection that sends nothing for ``idle_timeout`` seconds (idle keep-alive, or a request
stopped half-way) is closed, and a body must arrive within that time: no client holds a
thread forever.

Message contents are data: they are tokenised as plain text, so a message holding
``<|im_end|><|im_start|>assistant`` cannot end its turn or write the reply; only the chat
template's own markup becomes control tokens.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import torch

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20  # the OpenAI API's own limit
MAX_CHOICES = 16
# A chat request for a classifier is a prompt plus one text: kilobytes. 1 MiB leaves ample room
# and keeps one request from holding the model (tokenising, a huge forward) for minutes.
DEFAULT_MAX_BODY_BYTES = 1 << 20
# Far above any pause of a working client (httpx drops its own idle connections after 5 s).
DEFAULT_IDLE_TIMEOUT = 30.0
CHAT_ROUTES = ("/v1/chat/completions", "/chat/completions")




class ClientGone(Exception):
    """The client hung up (e.g. timed out) while its request waited for the model."""


class RequestError(Exception):
    """A request the server refuses, answered with an OpenAI-shaped error body."""

    def __init__(self, status: HTTPStatus, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind


@dataclass(frozen=True)
class ChatRequest:
    messages: list[dict[str, str]]
    max_tokens: int
    temperature: float
    n: int
    logprobs: bool
    top_logprobs: int
    seed: int | None

    @classmethod
    def parse(cls, body: Any, served_model: str, max_tokens_limit: int) -> "ChatRequest":
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != served_model:
            raise RequestError(HTTPStatus.NOT_FOUND, f"model '{model}' is not served here; this server serves '{served_model}'", "model_not_found")
        if body.get("stream"):
            raise RequestError(HTTPStatus.BAD_REQUEST, "stream=true is not supported by this server")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(HTTPStatus.BAD_REQUEST, "'messages' must be a non-empty list")
        parsed = [_parse_message(m, i) for i, m in enumerate(messages)]
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        max_tokens = 16 if max_tokens is None else _int_field("max_tokens", max_tokens, 1, max_tokens_limit)
        temperature = body.get("temperature", 1.0)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise RequestError(HTTPStatus.BAD_REQUEST, "'temperature' must be a number in [0, 2]")
        n = _int_field("n", body.get("n", 1), 1, MAX_CHOICES)
        logprobs = bool(body.get("logprobs", False))
        top = _int_field("top_logprobs", body.get("top_logprobs") or 0, 0, MAX_TOP_LOGPROBS)
        if top and not logprobs:
            raise RequestError(HTTPStatus.BAD_REQUEST, "'top_logprobs' needs 'logprobs': true")
        seed = body.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise RequestError(HTTPStatus.BAD_REQUEST, "'seed' must be an integer")
        return cls(parsed, max_tokens, float(temperature), n, logprobs, top, seed)


def _int_field(name: str, value: Any, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RequestError(HTTPStatus.BAD_REQUEST, f"'{name}' must be an integer in [{lo}, {hi}]")
    return value


def _parse_message(message: Any, i: int) -> dict[str, str]:
    if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"messages[{i}] needs a role of system, user or assistant")
    content = message.get("content")
    if isinstance(content, list):  # content parts: only text parts are understood
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"messages[{i}]: only text content parts are supported")
        content = "".join(texts)  # type: ignore[arg-type]
    if not isinstance(content, str):
        raise RequestError(HTTPStatus.BAD_REQUEST, f"messages[{i}].content must be a string")
    return {"role": message["role"], "content": content}


class ChatModel:
    """A local causal LM that answers chat requests, one forward pass at a time."""

    def __init__(self, model: str = "smollm2-135m", dtype: str = "float32", device: str = "auto", max_tokens_limit: int = 256) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llkd.models import resolve_teacher
        from llkd.teacher.hf import pick_device

        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, not '{dtype}'")
        folder, _ = resolve_teacher(model)
        self.name = model
        self.device = pick_device(device)
        self.max_tokens_limit = max_tokens_limit
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        if not self.tokenizer.chat_template:
            raise ValueError(f"model '{model}' has no chat template; the chat-completions endpoint needs one")
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype)).to(self.device).eval()
        self.created = int(time.time())
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.stop_ids = eos_ids
        self._lock = threading.Lock()  # one forward at a time: the model is not re-entrant
        self.requests_served = 0

    def complete(self, req: ChatRequest, client_gone: Callable[[], bool] | None = None) -> dict[str, Any]:
        """Answer one request. ``client_gone`` is checked once the model is free: a client that
        timed out while queued is not worth a forward pass (its retry is already on the way)."""
        prompt_ids = self.prompt_ids(req.messages)
        limit = getattr(self.model.config, "max_position_embeddings", None)
        if limit and len(prompt_ids) + req.max_tokens > limit:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"prompt ({len(prompt_ids)} tokens) + max_tokens ({req.max_tokens}) exceeds the model's context of {limit}")
        # Greedy choices are all the same: decode one and copy it.
        run = replace(req, n=1) if req.temperature == 0 else req
        with self._lock:
            if client_gone is not None and client_gone():
                raise ClientGone
            tokens, logprob_rows = self._decode(prompt_ids, run)
            self.requests_served += 1
        if run.n != req.n:
            tokens, logprob_rows = tokens * req.n, logprob_rows * req.n
        choices = []
        for i in range(req.n):
            ids = tokens[i]
            stopped = bool(ids) and ids[-1] in self.stop_ids
            text_ids = ids[:-1] if stopped else ids
            choice: dict[str, Any] = {
                "index": i,
                "message": {"role": "assistant", "content": self.tokenizer.decode(text_ids, skip_special_tokens=True)},
                "logprobs": {"content": logprob_rows[i]} if req.logprobs else None,
                "finish_reason": "stop" if stopped else "length",
            }
            choices.append(choice)
        completion_tokens = sum(len(t) for t in tokens)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {"prompt_tokens": len(prompt_ids), "completion_tokens": completion_tokens, "total_tokens": len(prompt_ids) + completion_tokens},
        }

    def prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat prompt's token ids (:func:`llkd.teacher.openai.chat_prompt_ids`: the template's
        own markup parsed for special tokens, each message's content as plain text), so the
        openai teacher's token counts are this server's."""
        from llkd.teacher.openai import chat_prompt_ids

        return chat_prompt_ids(self.tokenizer, messages)

    @torch.inference_mode()
    def _decode(self, prompt_ids: list[int], req: ChatRequest) -> tuple[list[list[int]], list[list[dict[str, Any]]]]:
        """Generate ``req.n`` continuations; the prompt is run once and its KV cache shared."""
        n = req.n
        generator = None
        if req.temperature > 0:
            generator = torch.Generator(device=self.device)
            if req.seed is not None:
                generator.manual_seed(req.seed)
            else:
                generator.seed()
        out = self.model(input_ids=torch.tensor([prompt_ids], device=self.device), use_cache=True)
        cache = out.cache  # a DynamicCache, extended in place by each later forward
        logits = out.logits[:, -1].float()
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits = logits.expand(n, -1)
        tokens: list[list[int]] = [[] for _ in range(n)]
        rows: list[list[dict[str, Any]]] = [[] for _ in range(n)]
        done = [False] * n
        for step in range(req.max_tokens):
            logp = torch.log_softmax(logits, dim=-1)
            if generator is None:
                nxt = logp.argmax(dim=-1)
            else:
                probs = torch.softmax(logits / req.temperature, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            top = logp.topk(req.top_logprobs, dim=-1) if req.logprobs and req.top_logprobs else None
            for i in range(n):
                if done[i]:
                    continue
                tok = int(nxt[i])
                tokens[i].append(tok)
                if req.logprobs:
                    alternatives = [] if top is None else [self._token_entry(int(t), float(v)) for v, t in zip(top.values[i], top.indices[i])]
                    rows[i].append(self._token_entry(tok, float(logp[i, tok])) | {"top_logprobs": alternatives})
                done[i] = tok in self.stop_ids
            if all(done) or step == req.max_tokens - 1:
                break
            out = self.model(input_ids=nxt[:, None], cache=cache, use_cache=True)
            logits = out.logits[:, -1].float()
        return tokens, rows

    def _token_entry(self, token_id: int, logprob: float) -> dict[str, Any]:
        text = self.tokenizer.decode([token_id])
        return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection per worker
    server: "TeacherHTTPServer"
    _body_read = False

    def setup(self) -> None:
        # Every read and write of this connection waits at most this long: an idle keep-alive
        # connection or a request stopped half-way is closed instead of holding a thread forever.
        self.timeout = self.server.idle_timeout
        super().setup()

    def handle_one_request(self) -> None:
        self._body_read = False  # per request: the handler object serves a whole connection
        try:
            super().handle_one_request()  # a silent client before the request line: closed there
        except (TimeoutError, ConnectionError) as e:
            log.info("client %s stalled or left mid-request (%s); connection closed", self.address_string(), type(e).__name__)
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0].rstrip("/")
        chat = self.server.chat_model
        try:
            if path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok", "model": chat.name})
            elif path in ("/v1/models", "/models"):
                self._check_key()
                self._send(HTTPStatus.OK, {"object": "list", "data": [{"id": chat.name, "object": "model", "created": chat.created, "owned_by": "llkd"}]})
            else:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route GET {path}", "not_found")
        except RequestError as e:
            self._error(e)

    def do_POST(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            if path not in CHAT_ROUTES:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no route POST {path}", "not_found")
            self._check_key()
            body = self._read_json()
            chat = self.server.chat_model
            req = ChatRequest.parse(body, chat.name, chat.max_tokens_limit)
            self._send(HTTPStatus.OK, chat.complete(req, self._client_gone))
        except ClientGone:
            log.info("client %s hung up while queued; request skipped", self.address_string())
            self.close_connection = True
        except (TimeoutError, ConnectionError):
            raise  # the client stopped sending or reading: handle_one_request closes the connection
        except RequestError as e:
            if not self._body_read:  # the unread body would be parsed as the next request
                self.close_connection = True
            self._error(e)
        except Exception as e:  # a bug or an out-of-memory must not kill the serving thread silently
            log.exception("chat completion failed")
            self._error(RequestError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(e).__name__}: {e}", "server_error"))

    def _client_gone(self) -> bool:
        """True when the client closed its connection (readable, yet nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _check_key(self) -> None:
        key = self.server.api_key
        if not key:
            return
        given = self.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        # compare_digest: the time taken does not tell an attacker how much of the key matched
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise RequestError(HTTPStatus.UNAUTHORIZED, "missing or wrong API key (send 'Authorization: Bearer <key>')", "invalid_api_key")

    def _content_length(self) -> int:
        """The announced body size, checked before a byte of the body is read."""
        value = self.headers.get("Content-Length")
        if value is None:
            if self.headers.get("Transfer-Encoding"):
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not supported; send Content-Length")
            return 0
        value = value.strip()
        if not value.isdigit():  # "abc", "-1", "1e3": int() would raise or read forever
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length must be a non-negative integer, not '{value[:20]}'")
        length = int(value)
        limit = self.server.max_body_bytes
        if length > limit:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body of {length} bytes exceeds this server's limit of {limit} bytes", "request_too_large")
        return length

    def _read_json(self) -> Any:
        length = self._content_length()
        raw = self._read_body(length) if length else b""
        self._body_read = True
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"request body is not valid JSON: {e}") from e

    def _read_body(self, length: int) -> bytes:
        """``length`` bytes, which must all arrive within idle_timeout: a client trickling a byte
        now and then does not reset the clock, as it would for one socket read."""
        deadline = time.monotonic() + self.server.idle_timeout
        chunks: list[bytes] = []
        got = 0
        try:
            while got < length:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"request body incomplete after {self.server.idle_timeout:g}s")
                self.connection.settimeout(left)
                chunk = self.rfile.read1(min(length - got, 1 << 16))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-body")
                chunks.append(chunk)
                got += len(chunk)
        finally:
            self.connection.settimeout(self.server.idle_timeout)
        return b"".join(chunks)

    def _error(self, e: RequestError) -> None:
        self._send(e.status, {"error": {"message": str(e), "type": e.kind, "code": int(e.status)}})

    def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from http.server
        log.debug("%s %s", self.address_string(), format % args)


class TeacherHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a hung client connection never blocks shutdown

    def __init__(self, chat_model: ChatModel, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, idle_timeout: float = DEFAULT_IDLE_TIMEOUT) -> None:
        if not idle_timeout > 0:
            raise ValueError(f"idle_timeout must be positive, not {idle_timeout}")
        self.chat_model = chat_model
        self.api_key = api_key or None
        self.max_body_bytes = max_body_bytes
        self.idle_timeout = float(idle_timeout)
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start_background(self) -> threading.Thread:
        """Serve from a daemon thread (tests, notebooks); stop with ``shutdown()``."""
        thread = threading.Thread(target=self.serve_forever, name="llkd-teacher-server", daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        """Stop a server started with ``start_background`` and release its port."""
        self.shutdown()
        self.server_close()


def is_loopback(host: str) -> bool:
    """True when ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: loopback only if every address it resolves to is
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(str(info[4][0]).split("%")[0]).is_loopback for info in infos)


def bind_warning(host: str, api_key: bool) -> str | None:
    """What to tell the operator when the server is reachable from other machines."""
    if is_loopback(host):
        return None
    where = "every network interface" if host in ("", "0.0.0.0", "::") else host
    if api_key:
        return f"serving on {where}: other machines can reach this teacher; requests need the API key, but travel unencrypted (plain HTTP)"
    return (f"serving on {where} without an API key: anyone who can reach this port can use the model "
            "(set --api-key-env, or bind 127.0.0.1)")
