"""Local GGUF teacher through llama.cpp (llama-cpp-python, an optional extra:
``pip install 'llkd[llamacpp]'``). Runs quantised weights directly, without the one-off
conversion to an HF folder that the ``hf`` backend needs, and is usually the faster CPU path.

Scoring is the ``hf`` backend's (method.md section 1): each label's verbalizer is scored in
full as the continuation of the prompt, and the distribution is the softmax over labels of
the summed token log-probs. The prompt prefix shared by all texts is evaluated once and kept
in llama.cpp's KV cache: for every text the context is rewound to the end of the prefix
(``Llama.eval`` drops cached positions past ``n_tokens`` before decoding), so only the text,
the suffix and the verbalizer tokens are computed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llkd.data.schema import LabelSchema
from llkd.models import TEACHERS, ModelNotFound, file_fingerprint
from llkd.teacher.base import TEACHER_BACKENDS, TeacherBackend, TeacherAnswer, TeacherFailure, softmax
from llkd.teacher.cost import TokenUsage, UsageEstimate
from llkd.teacher.prompt import PromptTemplate

INSTALL_HINT = "the llamacpp teacher backend needs llama-cpp-python; install it with: pip install 'llkd[llamacpp]'"


def resolve_gguf(name_or_path: str) -> tuple[Path, str]:
    """(GGUF file, prompt kind) for a packaged teacher name or a .gguf path."""
    if name_or_path in TEACHERS:
        info = TEACHERS[name_or_path]
        return info.gguf_path(), info.kind
    path = Path(name_or_path)
    if path.suffix == ".gguf" and path.is_file():
        return path, "auto"
    raise ModelNotFound(f"llamacpp teacher '{name_or_path}' is neither a packaged name ({', '.join(TEACHERS)}) nor a .gguf file")


class _GGUFChatTemplate:
    """What ``PromptTemplate.split`` needs from a tokenizer, taken from the GGUF's metadata."""

    def __init__(self, llm: Any, formatter_cls: Any) -> None:
        self.chat_template: str | None = llm.metadata.get("tokenizer.chat_template")
        self.bos_token = self._token_text(llm, llm.token_bos())
        self.eos_token = self._token_text(llm, llm.token_eos())
        self._formatter_cls = formatter_cls

    @staticmethod
    def _token_text(llm: Any, token: int) -> str:
        if token is None or token < 0:
            return ""
        return llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise ValueError("this GGUF has no chat template; use template: completion")
        formatter = self._formatter_cls(template=self.chat_template, eos_token=self.eos_token, bos_token=self.bos_token, add_generation_prompt=add_generation_prompt)
        return formatter(messages=messages).prompt


@TEACHER_BACKENDS.register("llamacpp")
class LlamaCppTeacher(TeacherBackend):
    def __init__(
        self,
        schema: LabelSchema,
        model: str = "smollm2-135m",
        template: str = "auto",
        device: str = "auto",
        max_text_tokens: int = 256,
        n_ctx: int = 2048,
        threads: int | None = None,
        **_: Any,
    ) -> None:
        super().__init__(schema)
        try:  # optional extra: imported here so llkd imports without it
            import llama_cpp
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as e:
            raise ImportError(INSTALL_HINT) from e
        self._lib = llama_cpp
        path, kind = resolve_gguf(model)
        self.model_name = model
        self.max_text_tokens = max_text_tokens
        self.n_ctx = n_ctx
        # n_gpu_layers=-1 offloads everything when llama.cpp was built with a GPU backend; a
        # CPU-only build ignores it.
        self.llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_gpu_layers=0 if device == "cpu" else -1, n_threads=threads, logits_all=False, verbose=False
        )
        self._n_vocab = self.llm.n_vocab()
        chat = _GGUFChatTemplate(self.llm, Jinja2ChatFormatter)
        if template == "auto":
            template = kind if kind != "auto" else ("chat" if chat.chat_template else "completion")
        self.template = PromptTemplate.load(template)
        prefix, suffix = self.template.split(schema, chat)
        # Markup from the template is parsed as special tokens; the text itself never is.
        self.prefix_ids = self._tokenize(prefix, special=True)
        self.suffix_ids = self._tokenize(suffix, special=True)
        self.verbalizer_ids = [self._tokenize(self.template.verbalizer_prefix + lab.answer, special=False) for lab in schema.labels]
        if any(not v for v in self.verbalizer_ids):
            raise ValueError("a label verbalizer encodes to no tokens")
        self._weights_id = file_fingerprint(path)

    def identity(self) -> str:
        return (
            f"llamacpp|{self._weights_id}|tmpl={self.template.fingerprint()}"
            f"|labels={self.schema.fingerprint()}|max_text_tokens={self.max_text_tokens}|verbalizer"
        )

    def close(self) -> None:
        close = getattr(self.llm, "close", None)
        if close is not None:
            close()

    def _tokenize(self, text: str, special: bool) -> list[int]:
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=special))

    def _text_ids(self, text: str) -> list[int]:
        return self._tokenize(text, special=False)[: self.max_text_tokens] + self.suffix_ids

    def _prompt_tokens(self, text_ids: list[int]) -> int:
        """The hf backend's convention: the full prompt (though the prefix's KV cache is reused)
        plus the label-continuation tokens fed, all prompt-side; no completion tokens."""
        return len(self.prefix_ids) + len(text_ids) + sum(len(v) - 1 for v in self.verbalizer_ids)

    def _fits(self, text_ids: list[int]) -> bool:
        return len(self.prefix_ids) + len(text_ids) + max(len(v) for v in self.verbalizer_ids) <= self.n_ctx

    def estimate_usage(self, texts: Sequence[str]) -> UsageEstimate:
        """Exact, as ``score`` counts it; a text too long for n_ctx is not scored, so not counted."""
        counts = [self._prompt_tokens(ids) for ids in map(self._text_ids, texts) if self._fits(ids)]
        return UsageEstimate(TokenUsage(calls=len(counts), prompt_tokens=sum(counts)), exact=True, basis=f"tokenizer and prompt of {self.model_name}",
                             notes=("no completion tokens: labels are scored, not generated",))

    def score(self, texts: Sequence[str]) -> list[TeacherAnswer | TeacherFailure]:
        results: list[TeacherAnswer | TeacherFailure] = []
        longest_label = max(len(v) for v in self.verbalizer_ids)
        for text in texts:
            ids = self._text_ids(text)
            if not self._fits(ids):
                needed = len(self.prefix_ids) + len(ids) + longest_label
                results.append(TeacherFailure(f"prompt needs {needed} tokens, more than n_ctx={self.n_ctx}"))
                continue
            results.append(TeacherAnswer(softmax(self.label_log_probs(ids)), "verbalizer", prompt_tokens=self._prompt_tokens(ids), calls=1))
        return results

    def label_log_probs(self, text_ids: list[int]) -> list[float]:
        """Summed verbalizer token log-probs per label after prefix + ``text_ids``."""
        if not text_ids:
            raise ValueError("nothing to score after the prompt prefix")
        llm = self.llm
        self._rewind_to_prefix()
        llm.eval(text_ids)
        end = llm.n_tokens
        first = self._last_log_probs()
        scores = []
        for v in self.verbalizer_ids:
            total = float(first[v[0]])
            if len(v) > 1:
                llm.n_tokens = end  # back to the end of this text for every label
                for j in range(len(v) - 1):
                    llm.eval([v[j]])
                    total += float(self._last_log_probs()[v[j + 1]])
            scores.append(total)
        return scores

    def _rewind_to_prefix(self) -> None:
        """Keep the prefix's KV cache; evaluate it only the first time (or if it was lost)."""
        llm, p = self.llm, len(self.prefix_ids)
        if llm.n_tokens < p or list(llm.input_ids[:p]) != self.prefix_ids:
            llm.reset()
            llm.eval(self.prefix_ids)
        llm.n_tokens = p

    def _last_log_probs(self) -> np.ndarray:
        # With logits_all=False llama-cpp-python leaves Llama.scores empty; the last decoded
        # token's logits live in the context.
        ptr = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        shifted = logits - logits.max()
        return shifted - np.log(np.exp(shifted).sum())
