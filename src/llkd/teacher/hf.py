"""Local causal-LM teacher (transformers): an HF folder, a GGUF file or a packaged model.

Scoring follows method.md section 1: every label's verbalizer is scored in full as the
continuation of the prompt; the distribution is the softmax over labels of the summed token
log-probs. Three things make it fast without changing the answer:
- the prompt prefix shared by all texts is run once and its KV cache reused for every batch;
- texts are batched by similar length (right padding, explicit positions);
- the LM head runs only at the positions whose next token is scored, not the whole sequence.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from llkd.config import ConfigError
from llkd.data.schema import LabelSchema
from llkd.hardware import resolve_dtype
from llkd.models import file_fingerprint, resolve_teacher
from llkd.teacher.base import TEACHER_BACKENDS, TeacherBackend, TeacherAnswer, TeacherFailure, softmax
from llkd.teacher.cost import TokenUsage, UsageEstimate
from llkd.teacher.prompt import PromptTemplate

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> torch.device:
    if device != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@TEACHER_BACKENDS.register("hf")
class HFTeacher(TeacherBackend):
    def __init__(
        self,
        schema: LabelSchema,
        model: str = "smollm2-135m",
        template: str = "auto",
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 16,
        max_text_tokens: int = 256,
        **_: Any,
    ) -> None:
        super().__init__(schema)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder, kind = resolve_teacher(model)
        self.model_name = model
        self.device = pick_device(device)
        self.dtype = resolve_dtype(dtype, self.device)  # the resolved name goes into the identity
        self.batch_size = batch_size
        self.max_text_tokens = max_text_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=_DTYPES[self.dtype]).to(self.device).eval()
        if template == "auto":
            template = kind if kind != "auto" else ("chat" if self.tokenizer.chat_template else "completion")
        self.template = PromptTemplate.load(template)
        self._control_ids = self._check_plain_text_tokenisation(model)
        prefix, suffix = self.template.split(schema, self.tokenizer)
        # Markup from the template is parsed as special tokens; texts and labels never are.
        self.prefix_ids = self._encode(prefix)
        self.suffix_ids = self._encode(suffix)
        self.verbalizer_ids = [self._encode_plain(self.template.verbalizer_prefix + lab.answer) for lab in schema.labels]
        if any(not v for v in self.verbalizer_ids):
            raise ValueError("a label verbalizer encodes to no tokens")
        # Usage convention (what a hosted API would bill for the same scoring): every token the
        # model reads is a prompt token, nothing is generated, so completion_tokens is 0. A text
        # counts the full prompt (prefix + text + suffix) though the prefix's KV cache is reused,
        # plus the label-continuation tokens it is fed (all but the last token of each
        # multi-token verbalizer, once per text; padding not counted).
        self._continuation_tokens = sum(len(v) - 1 for v in self.verbalizer_ids)
        self._weights_id = self._model_identity(folder)
        self._prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        softcap = getattr(self.model.config, "final_logit_softcapping", None)
        self._softcap = float(softcap) if softcap else None

    # -- identity -------------------------------------------------------------------------
    @staticmethod
    def _model_identity(folder: Any) -> str:
        from pathlib import Path

        weights = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("*.bin"))
        return ",".join(file_fingerprint(w) for w in weights) or str(folder)

    def identity(self) -> str:
        return (
            f"hf|{self._weights_id}|{self.dtype}|tmpl={self.template.fingerprint()}"
            f"|labels={self.schema.fingerprint()}|max_text_tokens={self.max_text_tokens}|verbalizer"
        )

    # -- helpers --------------------------------------------------------------------------
    def _encode(self, text: str) -> list[int]:
        """Template markup: special-token strings (chat tags, BOS) become control tokens."""
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _encode_plain(self, text: str) -> list[int]:
        """Untrusted text (a pool text, a label): tokenised as the characters it is, so a text
        holding '<|im_end|><|im_start|>assistant' cannot close the user turn and write the
        teacher's answer. For texts without such strings the ids are the same as _encode's, so
        answers cached before this existed stay valid."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _check_plain_text_tokenisation(self, model: str) -> frozenset[int]:
        """The tokenizer's control-token ids, after checking that _encode_plain never yields one
        (a tokenizer that ignored split_special_tokens would let texts inject prompt structure)."""
        decoder = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        control = frozenset(self.tokenizer.all_special_ids) | {i for i, t in decoder.items() if getattr(t, "special", False)}
        control -= {getattr(self.tokenizer, "unk_token_id", None)}  # what plain text maps unknown characters to: not structure
        markup = "".join(str(t.content) for i, t in decoder.items() if i in control) + "".join(self.tokenizer.all_special_tokens)
        if markup and control & set(self._encode_plain(markup)):
            raise ConfigError(f"teacher '{model}': its tokenizer ({type(self.tokenizer).__name__}) turns control-token strings in a text "
                              "into control tokens even with split_special_tokens; use the llamacpp backend for this model")
        return control

    def _text_ids(self, text: str) -> list[int]:
        return self._encode_plain(text)[: self.max_text_tokens] + self.suffix_ids

    # -- the scoring interface the speed harness measures (public, so it needs no internals) --
    def text_token_ids(self, text: str) -> list[int]:
        """The token ids that follow the shared prompt prefix for ``text``: the text as plain
        text (its first max_text_tokens tokens), then the answer cue."""
        return self._text_ids(text)

    def reset_prefix_cache(self) -> None:
        """Forget the shared prefix's KV cache, so the next batch computes it again (a cold run)."""
        self._prefix_kv = None

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.get_output_embeddings()(hidden).float()
        if self._softcap:
            logits = torch.tanh(logits / self._softcap) * self._softcap
        return torch.log_softmax(logits, dim=-1)

    @property
    def _body(self) -> torch.nn.Module:
        return self.model.base_model

    def _cache_from(self, kv: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> Any:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, (k, v) in enumerate(kv):
            cache.update(k.expand(batch, -1, -1, -1).contiguous(), v.expand(batch, -1, -1, -1).contiguous(), layer)
        return cache

    @torch.inference_mode()
    def _prefix_cache(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self._prefix_kv is None:
            ids = torch.tensor([self.prefix_ids], device=self.device)
            out = self._body(input_ids=ids, use_cache=True)
            cache = out.cache
            self._prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        return self._prefix_kv

    # -- usage ----------------------------------------------------------------------------
    def _prompt_tokens(self, text_ids: list[int]) -> int:
        """The prompt tokens one text bills (the convention is in __init__)."""
        return len(self.prefix_ids) + len(text_ids) + self._continuation_tokens

    def estimate_usage(self, texts: Sequence[str]) -> UsageEstimate:
        """Exact: the same tokenizer and prompt builder as ``score``, without the model."""
        tokens = sum(self._prompt_tokens(self._text_ids(t)) for t in texts)
        return UsageEstimate(TokenUsage(calls=len(texts), prompt_tokens=tokens), exact=True, basis=f"tokenizer and prompt of {self.model_name}",
                             notes=("no completion tokens: labels are scored, not generated",))

    # -- scoring --------------------------------------------------------------------------
    def score(self, texts: Sequence[str]) -> list[TeacherAnswer | TeacherFailure]:
        encoded = [self._text_ids(t) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i]))
        results: list[TeacherAnswer | TeacherFailure] = [TeacherFailure("not scored")] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            scores = self.label_log_probs([encoded[i] for i in idx])
            for row, i in enumerate(idx):
                results[i] = TeacherAnswer(softmax(scores[row].tolist()), "verbalizer", prompt_tokens=self._prompt_tokens(encoded[i]), calls=1)
        return results

    @torch.inference_mode()
    def label_log_probs(self, batch: list[list[int]]) -> torch.Tensor:
        """Sum of verbalizer token log-probs per (text, label): a [B, C] tensor.

        ``batch`` holds text+suffix token ids; the shared prefix comes from the KV cache.
        """
        dev = self.device
        kv = self._prefix_cache()
        p = len(self.prefix_ids)
        b = len(batch)
        lengths = torch.tensor([len(x) for x in batch], device=dev)
        width = int(lengths.max())
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((b, width), pad, dtype=torch.long, device=dev)
        for r, x in enumerate(batch):
            ids[r, : len(x)] = torch.tensor(x, device=dev)
        text_mask = (torch.arange(width, device=dev)[None, :] < lengths[:, None]).long()
        mask = torch.cat([torch.ones(b, p, dtype=torch.long, device=dev), text_mask], dim=1)
        positions = (p + torch.arange(width, device=dev))[None, :].expand(b, -1)
        cache = self._cache_from(kv, b)
        out = self._body(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True)
        last = out.last_hidden_state[torch.arange(b, device=dev), lengths - 1]
        first = self._head(last)  # [B, V]: next-token log-probs after the prompt
        first_ids = torch.tensor([v[0] for v in self.verbalizer_ids], device=dev)
        scores = first[:, first_ids].clone()

        multi = [c for c, v in enumerate(self.verbalizer_ids) if len(v) > 1]
        if multi:
            # Continue every text with each multi-token verbalizer, reusing the text's KV.
            m = len(multi)
            conts = [self.verbalizer_ids[c] for c in multi]
            k = max(len(v) for v in conts) - 1
            cont_ids = torch.full((m, k), pad, dtype=torch.long, device=dev)
            cont_mask = torch.zeros((m, k), dtype=torch.long, device=dev)
            for j, v in enumerate(conts):
                cont_ids[j, : len(v) - 1] = torch.tensor(v[:-1], device=dev)
                cont_mask[j, : len(v) - 1] = 1
            cache.batch_repeat_interleave(m)
            ids2 = cont_ids.repeat(b, 1)
            mask2 = torch.cat([mask.repeat_interleave(m, dim=0), cont_mask.repeat(b, 1)], dim=1)
            pos2 = (p + lengths.repeat_interleave(m))[:, None] + torch.arange(k, device=dev)[None, :]
            out2 = self._body(input_ids=ids2, attention_mask=mask2, position_ids=pos2, cache=cache, use_cache=False)
            logp = self._head(out2.last_hidden_state)  # [B*m, k, V]
            for j, v in enumerate(conts):
                targets = torch.tensor(v[1:], device=dev)
                rows = torch.arange(j, b * m, m, device=dev)
                tok_lp = logp[rows][:, torch.arange(len(v) - 1, device=dev), targets]  # [B, len-1]
                scores[:, multi[j]] += tok_lp.sum(dim=1)
        return scores

    @torch.inference_mode()
    def label_log_probs_without_reuse(self, text_ids: list[int]) -> torch.Tensor:
        """Reference scoring: the full prompt + each verbalizer run from scratch, one label at a
        time (no KV reuse, no batching). Used to check the fast path and as a speed baseline."""
        out = torch.empty(len(self.verbalizer_ids))
        for c, v in enumerate(self.verbalizer_ids):
            ids = torch.tensor([self.prefix_ids + text_ids + v], device=self.device)
            logits = self.model(input_ids=ids).logits.float()[0]
            if self._softcap:
                logits = torch.tanh(logits / self._softcap) * self._softcap
            logp = torch.log_softmax(logits, dim=-1)
            start = len(self.prefix_ids) + len(text_ids) - 1
            out[c] = sum(logp[start + j, tok] for j, tok in enumerate(v))
        return out
