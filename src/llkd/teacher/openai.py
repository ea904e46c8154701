"""Teacher behind any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp
server, ``llkd serve-teacher``, hosted APIs).

Confidence comes from one of two signals (method.md section 1 for servers):
- ``logprobs``: the top log-probs of the first generated token. Each candidate token is
  credited to the label whose verbalizer it starts (case-insensitive, whitespace-stripped),
  if exactly one does; the mass per label is renormalised over the label set.
- ``vote``: k sampled replies (temperature 1), each parsed to a label; the vote share.
``auto`` uses logprobs and switches to voting the first time the server returns none.

Servers fail in ordinary ways (rate limits, restarts, overload, truncated bodies), so every
request is retried with exponential back-off and full jitter, honouring Retry-After; a text
whose retries run out gets a ``TeacherFailure`` naming the last error. ``score`` never raises
for one text's trouble and never drops a text.

Three failures are not one text's trouble and stop the whole call with ``TeacherUnavailable``
(one message, instead of every text retried against a dead server): a server that refuses
connections ``max_connection_failures`` times in a row for one request (with the back-off in
between, a few seconds: a restart of a local server can take longer, and a re-run resumes from
the cache); a server that accepts connections but answers nothing, ``max_timeouts`` requests
in a row timing out across all workers with no response in between (default concurrency + 2:
one wave of in-flight requests can time out together on a server that is merely queueing, a
second wave with no answer means it answers nothing; before, each text cost up to
(max_retries + 1) x timeout); and any 401/403 (the same key will be refused for every text).

Texts are data: each goes into the one user message as plain content, never into the prompt's
structure (the server applies its chat template around it).

Usage: each answer carries the tokens the server reported in its responses' ``usage`` (summed
over a text's requests: votes, a logprobs try before voting); where a server reports none,
llkd counts them itself and marks the answer ``usage_estimated``. Counting, and the dry-run
``estimate_usage``, need the server's tokenizer, which the client cannot see: ``tokenizer``
names one (a packaged model or an HF tokenizer folder; default: the model's own when ``model``
is a packaged name), and without one the count is ~4 characters per token (rough).

The API key, and credentials in the URL (``user:password@``, sent as HTTP Basic; refused
together with a key, since a request carries one Authorization header), are redacted from
every error text in every form they are sent in, since some servers echo the request's
credentials in their error bodies. Where the model is served is not part of the cache
identity: the same model and settings on another host or port reuse its answers.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import logging
import math
import os
import random
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import httpx

from llkd.config import ConfigError
from llkd.data.schema import LabelSchema
from llkd.models import TEACHERS, resolve_teacher
from llkd.teacher.base import TEACHER_BACKENDS, TeacherBackend, TeacherAnswer, TeacherFailure, TeacherUnavailable, total_usage
from llkd.teacher.cost import CHARS_PER_TOKEN, TokenUsage, UsageEstimate, format_usage, heuristic_tokens
from llkd.teacher.prompt import PromptTemplate, label_from_reply

log = logging.getLogger(__name__)

# Mass given to labels no reply/token supported, so every answer is a proper distribution
# (downstream losses take logs) without visibly moving the confidence.
EPSILON = 1e-6
TOP_LOGPROBS = 20  # the most the OpenAI API allows
_RETRYABLE_STATUS = {408, 409, 425, 429}  # plus every 5xx
_AUTH_STATUS = {401, 403}  # the credentials are refused: asking again per text cannot help
REDACTED = "[redacted]"


class _Stopped(Exception):
    """This worker stops: the call as a whole gave up (``OpenAITeacher._give_up``)."""


class RequestFailed(Exception):
    """A request that cannot succeed (retries exhausted or a non-retryable error)."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


# -- answer parsing -------------------------------------------------------------------------


def _norm(s: str) -> str:
    return s.strip().lower()


def label_mass_from_top_logprobs(schema: LabelSchema, top: Sequence[dict[str, Any]]) -> list[float]:
    """Probability mass per label from one token's ``top_logprobs`` entries.

    A token counts for a label when it is a (case-insensitive, whitespace-stripped) prefix of
    exactly that label's verbalizer: " Sports" and "Sp" count for Sports, while "S", a prefix
    of both Sports and Sci/Tech, counts for neither. Spellings of one label add up.
    """
    answers = [_norm(lab.answer) for lab in schema.labels]
    mass = [0.0] * len(answers)
    for entry in top:
        token = _norm(str(entry.get("token", "")))
        logprob = entry.get("logprob")
        if not token or not isinstance(logprob, (int, float)) or not math.isfinite(logprob):
            continue
        matches = [i for i, a in enumerate(answers) if a.startswith(token)]
        if len(matches) == 1:
            mass[matches[0]] += math.exp(logprob)
    return mass


def _first_token_top_logprobs(choice: dict[str, Any]) -> list[dict[str, Any]] | None:
    """``choices[i].logprobs.content[0].top_logprobs``, or None when the server sent none."""
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    top = content[0].get("top_logprobs")
    return top if isinstance(top, list) and top else None


def _reply_text(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


# -- token counting (responses without usage, and the dry-run) ------------------------------

_CONTENT_SLOT = "\u241f__LLKD_MESSAGE_{}__\u241f"
_CONTENT_SLOT_RE = re.compile(r"\u241f__LLKD_MESSAGE_(\d+)__\u241f")
# Without the server's chat template its markup is guessed: OpenAI's documented overhead for
# its chat models, 3 tokens per message and 3 for the reply's opening.
_MESSAGE_OVERHEAD = 3
_REPLY_OVERHEAD = 3


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt token ids a chat server builds from ``messages``: the chat template rendered
    around the contents, its markup parsed for special tokens, each content as plain text.
    What ``llkd serve-teacher`` feeds its model (its ChatModel.prompt_ids calls this), and for
    ordinary texts what vLLM does."""
    slots = [{"role": m["role"], "content": _CONTENT_SLOT.format(i)} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(slots, tokenize=False, add_generation_prompt=True)
    ids: list[int] = []
    for i, piece in enumerate(_CONTENT_SLOT_RE.split(rendered)):
        if i % 2:  # re.split puts the captured message index at odd positions
            ids += tokenizer(messages[int(piece)]["content"], add_special_tokens=False, split_special_tokens=True)["input_ids"]
        elif piece:
            ids += tokenizer(piece, add_special_tokens=False)["input_ids"]
    return ids


def load_tokenizer(name: str) -> Any:
    """An HF tokenizer from a packaged teacher's short name, a GGUF file or a tokenizer folder
    (local files only: nothing is downloaded)."""
    from transformers import AutoTokenizer

    folder = resolve_teacher(name)[0] if name in TEACHERS or name.endswith(".gguf") else Path(name)
    return AutoTokenizer.from_pretrained(str(folder))


class TokenCounter:
    """Counts tokens as the server would: with its tokenizer (``exact`` once its chat template is
    known too), else ~CHARS_PER_TOKEN characters per token. ``basis`` says which, for the user."""

    def __init__(self, tokenizer: Any | None, basis: str) -> None:
        self.tokenizer = tokenizer
        self.basis = basis
        self.exact = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))

    def prompt(self, messages: list[dict[str, str]]) -> int:
        if self.exact:
            return len(chat_prompt_ids(self.tokenizer, messages))
        return sum(self.text(m["content"]) + _MESSAGE_OVERHEAD for m in messages) + _REPLY_OVERHEAD

    def text(self, text: str) -> int:
        if self.tokenizer is None:
            return heuristic_tokens(text)
        return len(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def completion(self, choice: dict[str, Any]) -> int:
        """One choice's tokens: its reply, plus the end-of-turn token a server that stopped on
        its own generated (and bills: llkd serve-teacher and vLLM count it)."""
        return self.text(_reply_text(choice)) + int(choice.get("finish_reason") == "stop")


def _reported(usage: Any, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


@dataclass
class _Tally:
    """The usage of one text's requests (one worker handles a text: no lock needed)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    def attach(self, result: TeacherAnswer | TeacherFailure) -> TeacherAnswer | TeacherFailure:
        result.calls, result.prompt_tokens, result.completion_tokens = self.calls, self.prompt_tokens, self.completion_tokens
        result.usage_estimated = self.estimated
        return result


# -- retry policy ---------------------------------------------------------------------------


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass
class ScoreStats:
    """What one ``score()`` call went through; logged, and kept as ``teacher.last_stats``."""

    answered: int = 0
    failed: int = 0
    requests: int = 0
    retries: int = 0
    retry_reasons: Counter = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)

    def retried(self, reason: str) -> None:
        with self._lock:
            self.retries += 1
            self.retry_reasons[reason] += 1


# -- the backend ----------------------------------------------------------------------------


@TEACHER_BACKENDS.register("openai")
class OpenAITeacher(TeacherBackend):
    def __init__(
        self,
        schema: LabelSchema,
        model: str = "smollm2-135m",
        template: str = "auto",
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        confidence: str = "auto",
        votes: int = 5,
        concurrency: int = 4,
        timeout: float = 60.0,
        max_retries: int = 6,
        max_tokens: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        retry_after_max: float = 60.0,
        max_connection_failures: int = 5,
        max_timeouts: int | None = None,
        tokenizer: str | None = None,
        **_: Any,
    ) -> None:
        super().__init__(schema)
        if not base_url:
            raise ConfigError("the openai teacher backend needs teacher.base_url, e.g. http://localhost:8000/v1")
        if confidence not in ("auto", "logprobs", "vote"):
            raise ConfigError(f"teacher.confidence must be auto, logprobs or vote, not '{confidence}'")
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(f"teacher.base_url must be an http(s) URL, not '{base_url}'")
        path = url.path.rstrip("/") or "/v1"  # "http://host:8000" means the usual /v1 root
        self.base_url = url.copy_with(path=path, username=None, password=None, query=None, fragment=None)
        self._endpoint = str(self.base_url) + "/chat/completions"
        self.model_name = model
        self.template = PromptTemplate.load("chat" if template == "auto" else template)
        self.confidence = confidence
        self.votes = votes
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.max_retries = max(0, max_retries)
        self.max_tokens = max_tokens
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.max_connection_failures = max(1, max_connection_failures)
        self.max_timeouts = max(1, max_timeouts if max_timeouts is not None else self.concurrency + 2)
        if tokenizer and tokenizer not in TEACHERS and not Path(tokenizer).exists():
            raise ConfigError(f"teacher.tokenizer '{tokenizer}' is neither a packaged model ({', '.join(TEACHERS)}) nor a tokenizer folder or GGUF file")
        # Only for counting tokens (never part of identity(): it changes no answer).
        self.tokenizer_name = tokenizer or (model if model in TEACHERS else None)
        self._token_counter: TokenCounter | None = None  # loaded on first need
        self._counter_lock = threading.Lock()
        self._timeouts_in_a_row = 0  # across workers; any HTTP response resets it
        self.last_stats = ScoreStats()
        self._api_key_env = api_key_env
        # Set when the server is unreachable or refuses the key: every worker stops, and
        # back-off sleeps wake at once.
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._logprobs_ok = confidence != "vote"  # auto: until the server shows it has none
        self._mode_lock = threading.Lock()
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if url.userinfo and key:
            raise ConfigError(f"teacher.base_url has credentials (user:password@) and ${api_key_env} holds an API key, but a request "
                              "carries one Authorization header, so one would be silently dropped; remove one of them "
                              "(an empty teacher.api_key_env sends no key)")
        if key:  # local servers need none; the key lives only in this header, never in logs
            headers["Authorization"] = f"Bearer {key}"
        self._has_key = bool(key)
        # Credentials in the URL (user:pass@host) authenticate as HTTP Basic, but stay out of
        # identity(); a server may echo them back in any form they were sent or written in.
        auth = httpx.BasicAuth(url.username, url.password) if url.userinfo else None
        self._secrets = sorted({x for x in (key, *_url_credential_forms(url)) if x}, key=len, reverse=True)
        self._client = httpx.Client(
            headers=headers,
            auth=auth,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )

    def identity(self) -> str:
        # The model and its settings, not where it is served: moving a server to another host or
        # port must not re-ask every text.
        return (
            f"openai|model={self.model_name}|tmpl={self.template.fingerprint()}"
            f"|labels={self.schema.fingerprint()}|confidence={self.confidence}|votes={self.votes}|max_tokens={self.max_tokens}"
        )

    def legacy_identities(self) -> list[str]:
        # Before host:port left the identity: answers cached from this same server stay found.
        where = f"{self.base_url.host}{':' + str(self.base_url.port) if self.base_url.port else ''}{self.base_url.path}"
        return [self.identity().replace("openai|", f"openai|{where}|", 1)]

    def close(self) -> None:
        self._client.close()

    # -- token counting -----------------------------------------------------------------------
    def token_counter(self) -> TokenCounter:
        """The counter for responses without usage and for the dry-run; the tokenizer is loaded
        on first use (a server that reports usage never needs it)."""
        with self._counter_lock:
            if self._token_counter is None:
                self._token_counter = self._load_counter()
            return self._token_counter

    def _load_counter(self) -> TokenCounter:
        name = self.tokenizer_name
        rough = f"~{CHARS_PER_TOKEN:g} characters per token"
        if name is None:
            return TokenCounter(None, f"{rough}: the server's tokenizer is unknown (set teacher.tokenizer)")
        try:
            tokenizer = load_tokenizer(name)
        except (OSError, ValueError, ImportError) as e:  # a model not found is an OSError
            log.warning("openai teacher: tokenizer '%s' did not load (%s); counting %s", name, e, rough)
            return TokenCounter(None, f"{rough}: tokenizer '{name}' did not load")
        if not getattr(tokenizer, "chat_template", None):
            return TokenCounter(tokenizer, f"tokenizer of {name}, which has no chat template: the server's markup is guessed")
        return TokenCounter(tokenizer, f"tokenizer and chat template of {name}")

    def estimate_usage(self, texts: Sequence[str]) -> UsageEstimate:
        """Dry-run: each text's request as the server would tokenise it. Completion tokens are the
        most the run can bill (max_tokens per completion): a budget must not promise less."""
        counter = self.token_counter()
        vote = self.confidence == "vote" or not self._logprobs_ok
        completions = self.votes if vote else 1
        prompt = sum(counter.prompt(self._messages(t)) for t in texts)
        usage = TokenUsage(calls=len(texts), prompt_tokens=prompt, completion_tokens=len(texts) * completions * self.max_tokens)
        notes = [f"completion tokens: at most {self.max_tokens} (max_tokens) per completion"]
        if vote:
            notes.append(f"{self.votes} votes in one request (n={self.votes}); a server that ignores n bills the prompt up to {self.votes} times")
        elif self.confidence == "auto":
            notes.append(f"assumes the server returns logprobs; one that does not is asked again for {self.votes} votes per text")
        return UsageEstimate(usage, exact=counter.exact, basis=counter.basis, notes=tuple(notes))

    def _response_usage(self, body: dict[str, Any], payload: dict[str, Any], tally: _Tally) -> None:
        """Add one response's usage to ``tally``: the server's numbers, or llkd's count (marked
        estimated) for what it left out."""
        usage = body.get("usage")
        prompt, completion = _reported(usage, "prompt_tokens"), _reported(usage, "completion_tokens")
        if prompt is None or completion is None:
            tally.estimated = True
            counter = self.token_counter()
            if prompt is None:
                prompt = counter.prompt(payload["messages"])
            if completion is None:
                completion = sum(counter.completion(c) for c in body["choices"])
        tally.calls += 1
        tally.prompt_tokens += prompt
        tally.completion_tokens += completion

    # -- scoring ----------------------------------------------------------------------------
    def score(self, texts: Sequence[str]) -> list[TeacherAnswer | TeacherFailure]:
        stats = ScoreStats()
        start = time.monotonic()
        if not texts:
            return []
        self._stop.clear()
        self._fatal = None
        self._timeouts_in_a_row = 0
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(texts)), thread_name_prefix="llkd-openai") as pool:
            results = list(pool.map(lambda t: self._answer(t, stats), texts))
        self.last_stats = stats
        if self._fatal is not None:
            raise TeacherUnavailable(self._fatal)
        answers = [r for r in results if r is not None]  # None only for stopped calls, raised above
        reasons = ", ".join(f"{k}: {v}" for k, v in stats.retry_reasons.most_common()) or "none"
        log.info(
            "openai teacher: %d answered, %d failed, %d requests, %d retries (%s); %s",
            stats.answered, stats.failed, stats.requests, stats.retries, reasons, format_usage(total_usage(answers, time.monotonic() - start)),
        )
        return answers

    def _answer(self, text: str, stats: ScoreStats) -> TeacherAnswer | TeacherFailure | None:
        """One text's answer or failure, with its usage; None when the call was stopped (see ``_give_up``)."""
        tally = _Tally()
        try:
            result = self._answer_or_raise(text, stats, tally)
        except _Stopped:
            return None
        except RequestFailed as e:
            result = TeacherFailure(self._redact(str(e)))
        except Exception as e:  # one text's surprise must not cost the other texts their answers
            log.error("openai teacher: unexpected error for one text: %s", self._redact(f"{type(e).__name__}: {e}"))
            result = TeacherFailure(self._redact(f"unexpected error: {type(e).__name__}: {e}"))
        stats.add(answered=int(isinstance(result, TeacherAnswer)), failed=int(isinstance(result, TeacherFailure)))
        return tally.attach(result)

    def _answer_or_raise(self, text: str, stats: ScoreStats, tally: _Tally) -> TeacherAnswer | TeacherFailure:
        if self.confidence == "vote" or not self._logprobs_ok:
            return self._vote(text, stats, tally)
        try:
            body = self._request(self._payload(text, logprobs=True), stats, tally)
        except RequestFailed as e:
            # Some servers reject the logprobs parameters outright rather than ignoring them.
            if self.confidence == "auto" and e.status in (400, 422) and "logprob" in str(e).lower():
                self._switch_to_vote(f"rejects logprobs ({e})")
                return self._vote(text, stats, tally)
            raise
        choice = body["choices"][0]
        top = _first_token_top_logprobs(choice)
        if top is None:
            if self.confidence == "logprobs":
                return TeacherFailure("server returned no logprobs; use confidence=vote (or auto) with this server")
            self._switch_to_vote("returned no logprobs")
            return self._vote(text, stats, tally)
        mass = label_mass_from_top_logprobs(self.schema, top)
        total = sum(mass)
        if total > 0:  # renormalise over the labels first, so the floor does not depend on the total
            return TeacherAnswer([m / total + EPSILON for m in mass], "first_token_logprobs")
        # No candidate token starts a label (e.g. the reply opens with "The"): read the reply.
        reply = _reply_text(choice)
        label = label_from_reply(self.schema, reply)
        if label is None:
            return TeacherFailure(f"no label in the first token's top logprobs nor in the reply {reply[:80]!r}")
        return TeacherAnswer(self._one_hot(label), "parsed_reply")

    def _switch_to_vote(self, why: str) -> None:
        with self._mode_lock:
            if self._logprobs_ok:
                log.warning("openai teacher: %s %s; switching to vote confidence (%d samples per text)", self.base_url.host, why, self.votes)
            self._logprobs_ok = False

    def _vote(self, text: str, stats: ScoreStats, tally: _Tally) -> TeacherAnswer | TeacherFailure:
        replies: list[str] = []
        # Ask for n samples at once; servers that ignore `n` get asked again, each request with
        # its own seed so the samples differ, at most `votes` requests in all.
        for attempt in range(self.votes):
            need = self.votes - len(replies)
            if need <= 0:
                break
            body = self._request(self._payload(text, logprobs=False, n=need, seed=self._seed(text, attempt)), stats, tally)
            replies += [_reply_text(c) for c in body["choices"][:need]]
        labels = [label_from_reply(self.schema, r) for r in replies]
        counts = Counter(label for label in labels if label is not None)
        if not counts:
            return TeacherFailure(f"none of {len(replies)} sampled replies names a label, e.g. {replies[0][:80]!r}" if replies else "server returned no choices")
        return TeacherAnswer([counts.get(i, 0) / len(replies) + EPSILON for i in range(self.schema.num_labels)], "vote")

    def _one_hot(self, label: int) -> list[float]:
        return [1.0 if i == label else EPSILON for i in range(self.schema.num_labels)]

    @staticmethod
    def _seed(text: str, attempt: int) -> int:
        return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) + attempt

    def _messages(self, text: str) -> list[dict[str, str]]:
        messages = [{"role": "user", "content": self.template.render_user(self.schema, text)}]
        if self.template.system:
            messages.insert(0, {"role": "system", "content": self.template.system})
        return messages

    def _payload(self, text: str, logprobs: bool, n: int = 1, seed: int | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model_name, "messages": self._messages(text), "max_tokens": self.max_tokens}
        if logprobs:
            payload |= {"temperature": 0.0, "logprobs": True, "top_logprobs": TOP_LOGPROBS}
        else:
            payload |= {"temperature": 1.0, "n": n}
            if seed is not None:
                payload["seed"] = seed
        return payload

    # -- stopping the whole call ---------------------------------------------------------------
    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def _give_up(self, why: str) -> None:
        """Stop every worker of this ``score`` call; ``score`` raises TeacherUnavailable(why)."""
        with self._mode_lock:
            if self._fatal is None:  # the first reason wins; score() raises it once
                self._fatal = self._redact(why)
            self._stop.set()
        raise _Stopped

    def _count_timeout(self) -> int:
        with self._mode_lock:
            self._timeouts_in_a_row += 1
            return self._timeouts_in_a_row

    def _key_hint(self) -> str:
        if not self._api_key_env:
            return "no API key is configured (teacher.api_key_env is empty)"
        state = "is set" if self._has_key else "is not set"
        return f"the key comes from ${self._api_key_env}, which {state}"

    # -- HTTP with retries -------------------------------------------------------------------
    def _request(self, payload: dict[str, Any], stats: ScoreStats, tally: _Tally) -> dict[str, Any]:
        """POST one chat completion; retry transient failures; raise RequestFailed otherwise.
        The usage of the response that comes back goes into ``tally``."""
        last_error = ""
        refused = 0  # consecutive attempts of this request that could not connect at all
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise _Stopped
            wait: float | None = None
            stats.add(requests=1)
            try:
                response = self._client.post(self._endpoint, json=payload)
            except httpx.TimeoutException as e:
                kind, last_error = "timeout", f"timed out after {self.timeout:g}s ({type(e).__name__})"
                refused = 0
                in_a_row = self._count_timeout()
                if in_a_row >= self.max_timeouts:
                    self._give_up(f"the teacher server at {self.base_url} accepts connections but answered none of the last {in_a_row} "
                                  f"requests within {self.timeout:g}s (teacher.timeout); is it stuck or overloaded? Answers so far are cached; "
                                  "re-run once it answers (or with a longer --teacher-timeout)")
            except httpx.TransportError as e:
                kind, last_error = "connection", self._redact(f"connection error ({type(e).__name__}: {e})")
                # Only a refused/unresolvable connection says "no server there"; a connection
                # dropped mid-request (a server killed under load) is retried as before.
                refused = refused + 1 if isinstance(e, httpx.ConnectError) else 0
                if refused >= min(self.max_connection_failures, self.max_retries + 1):
                    self._give_up(f"cannot reach the teacher server at {self.base_url} ({refused} connection attempts in a row failed; "
                                  f"last: {last_error}); is it running? Answers so far are cached; re-run once it is up")
            else:
                refused = 0
                self._timeouts_in_a_row = 0  # the server answers (whatever it says)
                status = response.status_code
                if status in _AUTH_STATUS:
                    self._give_up(f"HTTP {status} from {self.base_url.host}: {self._redact(_snippet(response))}; "
                                  f"the server refuses the credentials ({self._key_hint()})")
                if status == 200:
                    body = self._parse_body(response)
                    if isinstance(body, dict):
                        self._response_usage(body, payload, tally)
                        return body
                    kind, last_error = "malformed", f"malformed response body (HTTP 200): {body}"
                elif status in _RETRYABLE_STATUS or status >= 500:
                    kind, last_error = f"http_{status}", f"HTTP {status}: {self._redact(_snippet(response))}"
                    retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
                    if retry_after is not None:
                        wait = min(retry_after, self.retry_after_max)
                else:  # 4xx: the request itself is wrong; repeating it cannot help
                    raise RequestFailed(f"HTTP {status} from {self.base_url.host}: {self._redact(_snippet(response))}", status)
            if attempt == self.max_retries:
                break
            stats.retried(kind)
            if wait is None:  # full jitter: uniform in [0, min(cap, base * 2^attempt)]
                wait = random.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))
            log.debug("openai teacher: %s; retry %d/%d in %.2fs", last_error, attempt + 1, self.max_retries, wait)
            self._stop.wait(wait)  # wakes at once when another worker gives up on the server
        raise RequestFailed(f"gave up after {self.max_retries + 1} attempts; last error: {last_error}")

    @staticmethod
    def _parse_body(response: httpx.Response) -> dict[str, Any] | str:
        """The body if it is a usable completion, else a short description of what is wrong."""
        try:
            body = json.loads(response.content)
        except (ValueError, UnicodeDecodeError) as e:
            return f"not JSON ({e.__class__.__name__}: {e})"
        choices = body.get("choices") if isinstance(body, dict) else None
        if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
            return "no 'choices' list"
        return body


def _url_credential_forms(url: httpx.URL) -> list[str]:
    """Every form in which URL credentials can travel or be echoed: ``user:password`` decoded and
    as written (percent-encoded), the HTTP Basic token (what httpx.BasicAuth sends: base64 of
    the UTF-8 ``user:password``), and the password alone, or the user name where it is the
    only credential (a token as user name)."""
    if not url.userinfo:
        return []
    raw = url.userinfo.decode("ascii", errors="replace")
    plain = f"{url.username}:{url.password}"
    forms = [raw, plain, base64.b64encode(plain.encode("utf-8")).decode("ascii")]
    forms += [url.password, raw.partition(":")[2]] if url.password else [url.username]
    return [x for x in forms if x]


def _snippet(response: httpx.Response, limit: int = 200) -> str:
    """A short, single-line view of an error body (servers put the reason there)."""
    try:
        body = response.json()
        message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
        text = message if isinstance(message, str) else response.text
    except ValueError:
        text = response.text
    text = " ".join(text.split())
    return (text[:limit] + "...") if len(text) > limit else (text or "(empty body)")
