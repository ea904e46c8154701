"""Cost accounting of teacher calls without a real model: the pure cost module, the usage
fields of answers, the price and tokenizer settings, and how the openai backend (against a
scripted server) and the llamacpp backend (against a stand-in llama_cpp) count usage."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from test_teacher_llamacpp import fake_llama_cpp  # noqa: F401 - a fixture, used by name

from llkd.config import ConfigError, LLKDConfig, TeacherConfig
from llkd.data.schema import LabelSchema
from llkd.teacher.base import TeacherAnswer, TeacherFailure, total_usage
from llkd.teacher.cost import Prices, TokenUsage, UsageEstimate, format_money, format_usage, heuristic_tokens, money
from llkd.teacher.labeling import check_backend_options
from llkd.teacher.openai import OpenAITeacher, TokenCounter

SCHEMA = LabelSchema.from_names(["World", "Sports", "Business", "Sci/Tech"], task="news headline")
TEXTS = ["Stocks fall as oil prices surge", "Arsenal beat Chelsea 2-0", "NASA launches new Mars rover"]


# -- the pure module -----------------------------------------------------------------------


def test_usage_adds_up() -> None:
    a = TokenUsage(calls=2, prompt_tokens=100, completion_tokens=10, seconds=1.5)
    b = TokenUsage(calls=1, prompt_tokens=40, completion_tokens=5, seconds=0.5, estimated=1)
    assert a + b == TokenUsage(3, 140, 15, 2.0, 1)
    assert sum([a, b]) == a + b and sum([], TokenUsage()) == TokenUsage()
    assert (a + b).total_tokens == 155
    with pytest.raises(ValueError, match="cannot be negative"):
        TokenUsage(prompt_tokens=-1)


def test_money_from_usage_and_prices() -> None:
    usage = TokenUsage(calls=1234, prompt_tokens=56_789, completion_tokens=1_234)
    prices = Prices(prompt=0.15, completion=0.60)  # USD per 1M tokens
    assert money(usage, prices) == pytest.approx((56_789 * 0.15 + 1_234 * 0.60) / 1e6)  # 0.00925875
    assert money(TokenUsage(prompt_tokens=2_000_000, completion_tokens=1_000_000), Prices(2.5, 10)) == pytest.approx(15.0)
    assert money(usage, Prices()) == 0
    with pytest.raises(ValueError, match="prompt price must be a finite number >= 0"):
        Prices(prompt=-1)
    with pytest.raises(ValueError, match="completion price"):
        Prices(completion=float("nan"))
    assert Prices.from_settings(None, None) is None  # no prices: no money shown
    assert Prices.from_settings(0.5, None) == Prices(0.5, 0.0)


def test_one_console_line() -> None:
    usage = TokenUsage(calls=1234, prompt_tokens=56_789, completion_tokens=1_234)
    assert format_usage(usage, Prices(0.15, 0.60)) == "1,234 calls, 56,789 prompt + 1,234 completion tokens, $0.0093"
    assert format_usage(usage) == "1,234 calls, 56,789 prompt + 1,234 completion tokens"
    one = TokenUsage(calls=1, prompt_tokens=80, seconds=2.5, estimated=1)
    assert format_usage(one, Prices(2, 2)) == "1 call (1 with estimated tokens), 80 prompt + 0 completion tokens, $0.0002, 2.5 s"
    assert [format_money(x) for x in (0, 0.00001, 0.0123, 0.99994, 1234.5)] == ["$0", "<$0.0001", "$0.0123", "$0.9999", "$1,234.50"]


def test_heuristic_and_estimate_line() -> None:
    assert [heuristic_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    exact = UsageEstimate(TokenUsage(calls=2, prompt_tokens=160), exact=True, basis="tokenizer of x", notes=("no completion tokens",))
    assert exact.line() == "estimate: 2 calls, 160 prompt + 0 completion tokens (tokenizer of x; no completion tokens)"
    rough = UsageEstimate(TokenUsage(calls=2, prompt_tokens=160, completion_tokens=16), exact=False, basis="~4 characters per token")
    assert rough.line(Prices(1, 2)) == "estimate: 2 calls, 160 prompt + 16 completion tokens, $0.0002 (rough: ~4 characters per token)"


# -- answers carry their usage ---------------------------------------------------------------


def test_answers_keep_their_old_construction_and_equality() -> None:
    plain = TeacherAnswer([0.2, 0.8], "vote")
    assert (plain.prompt_tokens, plain.completion_tokens, plain.calls, plain.usage_estimated) == (0, 0, 0, False)
    billed = TeacherAnswer([0.2, 0.8], "vote", prompt_tokens=90, completion_tokens=10, calls=2, usage_estimated=True)
    assert billed == plain  # an answer read back from the cache (no usage) is the same answer
    assert billed.usage() == TokenUsage(calls=2, prompt_tokens=90, completion_tokens=10, estimated=2)
    failure = TeacherFailure("no label in 5 replies", prompt_tokens=70, completion_tokens=40, calls=1)
    assert failure == TeacherFailure("no label in 5 replies")
    assert total_usage([billed, failure], seconds=3.0) == TokenUsage(calls=3, prompt_tokens=160, completion_tokens=50, seconds=3.0, estimated=2)


# -- settings --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf")])
def test_a_bad_price_is_a_one_line_config_error(value: float) -> None:
    with pytest.raises(ConfigError) as e:
        LLKDConfig.validated({"teacher": {"price_prompt": value}}, source="command line")
    assert str(e.value).startswith("command line: teacher.price_prompt: a price is USD per 1M tokens, a finite number >= 0")
    assert "\n" not in str(e.value)


def test_prices_apply_to_every_backend_and_the_tokenizer_only_to_openai() -> None:
    for backend in ("hf", "openai", "llamacpp"):
        check_backend_options(TeacherConfig(backend=backend, price_prompt=0.15, price_completion=0.6))
    check_backend_options(TeacherConfig(backend="openai", tokenizer="smollm2-135m"))
    with pytest.raises(ConfigError, match="teacher.tokenizer does not apply to the hf teacher backend"):
        check_backend_options(TeacherConfig(backend="hf", tokenizer="smollm2-135m"))


def test_an_unknown_tokenizer_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="teacher.tokenizer 'no/such/folder' is neither a packaged model"):
        OpenAITeacher(SCHEMA, base_url="http://127.0.0.1:9/v1", tokenizer="no/such/folder")


# -- the openai backend against a scripted server ---------------------------------------------

Respond = Callable[[dict[str, Any]], dict[str, Any]]


class Scripted:
    """A chat-completions server answering each request with ``respond(body)`` (a JSON body)."""

    def __init__(self, respond: Respond) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                data = json.dumps(respond(body)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def scripted() -> Iterator[Callable[[Respond], Scripted]]:
    servers: list[Scripted] = []
    yield lambda respond: servers.append(Scripted(respond)) or servers[-1]
    for s in servers:
        s.close()


def reply(*contents: str, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [{"index": i, "message": {"role": "assistant", "content": c}, "logprobs": None, "finish_reason": "stop"} for i, c in enumerate(contents)]
    return {"choices": choices} | ({"usage": usage} if usage is not None else {})


def test_votes_sum_the_usage_of_every_request(scripted: Callable[[Respond], Scripted]) -> None:
    """A server that ignores ``n`` is asked again: the text's usage is the sum of its requests."""
    server = scripted(lambda body: reply("Sports", usage={"prompt_tokens": 50, "completion_tokens": 2}))
    teacher = OpenAITeacher(SCHEMA, model="remote-model", base_url=server.url, confidence="vote", votes=3, concurrency=1, api_key_env="")
    (answer,) = teacher.score(["Arsenal beat Chelsea 2-0"])
    assert len(server.requests) == 3 and isinstance(answer, TeacherAnswer)
    assert answer.usage() == TokenUsage(calls=3, prompt_tokens=150, completion_tokens=6)
    assert answer.probs[1] > 0.99  # usage goes beside the answer, never into it


def test_a_failed_answer_still_carries_what_it_cost(scripted: Callable[[Respond], Scripted]) -> None:
    server = scripted(lambda body: reply(*["I cannot tell"] * body.get("n", 1), usage={"prompt_tokens": 50, "completion_tokens": 12}))
    teacher = OpenAITeacher(SCHEMA, model="remote-model", base_url=server.url, confidence="vote", votes=3, concurrency=1, api_key_env="")
    (failure,) = teacher.score(["Arsenal beat Chelsea 2-0"])
    assert isinstance(failure, TeacherFailure) and "names a label" in failure.reason
    assert failure.usage() == TokenUsage(calls=1, prompt_tokens=50, completion_tokens=12)


def test_a_server_without_usage_is_counted_and_marked_estimated(scripted: Callable[[Respond], Scripted]) -> None:
    """No ``usage`` (and no known tokenizer): llkd's rough count, marked estimated, not in probs."""
    server = scripted(lambda body: reply(*["Sci/Tech"] * body.get("n", 1)))
    teacher = OpenAITeacher(SCHEMA, model="remote-model", base_url=server.url, confidence="vote", votes=2, concurrency=1, api_key_env="")
    answers = teacher.score(TEXTS)
    assert all(isinstance(a, TeacherAnswer) and a.method == "vote" and a.usage_estimated for a in answers)
    counter = teacher.token_counter()
    assert not counter.exact and "characters per token" in counter.basis
    for text, answer, body in zip(TEXTS, answers, server.requests):
        assert text in body["messages"][-1]["content"]
        assert answer.calls == 1 and answer.prompt_tokens == counter.prompt(body["messages"]) > len(text) // 4
        assert answer.completion_tokens == 2 * (heuristic_tokens("Sci/Tech") + 1)  # two replies, each with its end-of-turn token
    usage = total_usage(answers)
    assert usage.estimated == usage.calls == 3
    assert "(3 with estimated tokens)" in format_usage(usage)


def test_partial_usage_is_completed_and_marked(scripted: Callable[[Respond], Scripted]) -> None:
    server = scripted(lambda body: reply("World", usage={"prompt_tokens": 61}))  # no completion_tokens
    teacher = OpenAITeacher(SCHEMA, model="remote-model", base_url=server.url, confidence="vote", votes=1, api_key_env="")
    (answer,) = teacher.score(["Peace talks resume"])
    assert answer.prompt_tokens == 61 and answer.completion_tokens == heuristic_tokens("World") + 1 and answer.usage_estimated


def test_the_dry_run_without_a_tokenizer_is_rough_and_an_upper_bound_on_completions() -> None:
    teacher = OpenAITeacher(SCHEMA, model="gpt-4o-mini", base_url="http://127.0.0.1:9/v1", confidence="vote", votes=5, max_tokens=8)
    estimate = teacher.estimate_usage(TEXTS)
    assert not estimate.exact and teacher.tokenizer_name is None
    counter = TokenCounter(None, "")
    assert estimate.usage == TokenUsage(calls=3, prompt_tokens=sum(counter.prompt(teacher._messages(t)) for t in TEXTS), completion_tokens=3 * 5 * 8)
    line = estimate.line(Prices(0.15, 0.6))
    assert line.startswith("estimate: 3 calls, ") and "rough: ~4 characters per token" in line and "at most 8 (max_tokens) per completion" in line
    assert OpenAITeacher(SCHEMA, model="smollm2-135m", base_url="http://127.0.0.1:9/v1").tokenizer_name == "smollm2-135m"  # a packaged model's own


# -- the llamacpp backend (stand-in llama_cpp) -------------------------------------------------


def test_llamacpp_counts_what_it_runs_and_estimates_the_same(fake_llama_cpp: Path) -> None:  # noqa: F811
    from llkd.teacher.llamacpp import LlamaCppTeacher

    teacher = LlamaCppTeacher(SCHEMA, model=str(fake_llama_cpp), n_ctx=400, max_text_tokens=1000)  # one character, one token
    texts = [*TEXTS, "word " * 100]  # the last is too long for n_ctx: not scored, not billed
    estimate = teacher.estimate_usage(texts)
    results = teacher.score(texts)
    assert isinstance(results[-1], TeacherFailure) and results[-1].calls == 0
    assert total_usage(results) == estimate.usage and estimate.exact and estimate.usage.calls == 3
    # Every token the stand-in ran, with the prefix (run once, reused) billed once per text.
    p = len(teacher.prefix_ids)
    assert estimate.usage.prompt_tokens == teacher.llm.decoded - p + 3 * p
