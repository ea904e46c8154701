"""How the student trains: the whole encoder (finetune) or only a head on cached embeddings
(frozen). A mode owns what differs between the two: which model shape to load, how texts
become inputs, the optimiser's parameter groups, logits for pool rows, dev predictions and the
thread setting while training."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np
import torch

from llkd.config import StudentConfig
from llkd.student.embeddings import EmbeddingCache, cached_embeddings
from llkd.student.model import autocast, collate, encode, predict_probs

log = logging.getLogger("llkd.student.trainer")  # the training run's messages, under one logger

ParamGroups = list[dict[str, Any]]


def is_head(name: str) -> bool:
    """Parameters of the new classification head (and BERT's pooler, which only feeds it):
    they start untrained and get the head learning rate."""
    return any(part in name for part in ("classifier", "pooler", "score"))


class StudentMode:
    frozen: ClassVar[bool]  # load the pooled-embedding classifier whatever the checkpoint
    flush_every_step: ClassVar[bool]  # write each step-log row through at once

    def __init__(self, cfg: StudentConfig, model: Any, tokenizer: Any, device: torch.device, dtype: str, embedding_cache: Path | None = None) -> None:
        """``embedding_cache``: the SQLite file a frozen encoder's embeddings go to (None: the
        llkd cache dir's embeddings.sqlite)."""
        self.cfg, self.model, self.tokenizer, self.device, self.dtype = cfg, model, tokenizer, device, dtype
        self.embedding_cache = embedding_cache

    def prepare(self, texts: Sequence[str]) -> tuple[torch.nn.Module, ParamGroups]:
        """Turn the training texts into inputs; returns the module to train and its parameter groups."""
        raise NotImplementedError

    def logits(self, trainable: Any, rows: np.ndarray) -> torch.Tensor:
        """Float32 logits [len(rows), C] for training rows (indices into the prepared texts)."""
        raise NotImplementedError

    def dev_probs(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    @contextlib.contextmanager
    def training(self, trainable: Any) -> Iterator[None]:
        """Train mode for the loop; torch's thread count is put back afterwards."""
        trainable.train()
        threads = torch.get_num_threads()
        try:
            yield
        finally:
            torch.set_num_threads(threads)


class FinetuneMode(StudentMode):
    frozen = False
    flush_every_step = True

    def prepare(self, texts: Sequence[str]) -> tuple[torch.nn.Module, ParamGroups]:
        self.encoded = encode(self.tokenizer, texts, self.cfg.max_length)
        model = self.model
        pooler = getattr(getattr(model, "backbone", None), "pooler", None)
        if pooler is not None:
            # the pooled-embedding head never reads BERT's CLS pooler: without frozen
            # weights DDP waits for its gradients forever (and weight decay moves them)
            pooler.requires_grad_(False)
        head = [p for name, p in model.named_parameters() if is_head(name) and p.requires_grad]
        body = [p for name, p in model.named_parameters() if not is_head(name) and p.requires_grad]
        return model, [{"params": body, "lr": self.cfg.lr}, {"params": head, "lr": self.cfg.resolved_head_lr()}]

    def logits(self, trainable: Any, rows: np.ndarray) -> torch.Tensor:
        with autocast(self.dtype, self.device):
            logits = trainable(**collate(self.tokenizer, [self.encoded[i] for i in rows], self.device)).logits
        return logits.float()

    def dev_probs(self, texts: Sequence[str]) -> np.ndarray:
        return predict_probs(self.model, self.tokenizer, texts, self.cfg.max_length, dtype=self.dtype)


class FrozenMode(StudentMode):
    """The encoder runs once per text (cached on disk); only the head trains."""

    frozen = True
    flush_every_step = False  # a step takes about a millisecond: flush once an epoch

    def prepare(self, texts: Sequence[str]) -> tuple[torch.nn.Module, ParamGroups]:
        features, n_new = self._embeddings(texts)
        n = len(texts)
        log.info("frozen encoder: %d pool embeddings (%d encoded now, %d from cache)", n, n_new, n - n_new)
        self.model.backbone.requires_grad_(False)
        self.features = torch.from_numpy(features).to(self.device)
        head = self.model.classifier
        return head, [{"params": list(head.parameters()), "lr": self.cfg.resolved_head_lr()}]

    def logits(self, trainable: Any, rows: np.ndarray) -> torch.Tensor:
        return trainable(self.features[torch.from_numpy(rows).to(self.device)]).float()

    def dev_probs(self, texts: Sequence[str]) -> np.ndarray:
        embeddings, _ = self._embeddings(texts)
        return predict_probs(self.model, self.tokenizer, texts, self.cfg.max_length, dtype=self.dtype, embeddings=embeddings)

    def _embeddings(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        with EmbeddingCache(self.embedding_cache) as cache:
            return cached_embeddings(self.model, self.tokenizer, texts, self.cfg.max_length, self.dtype, cache=cache)

    @contextlib.contextmanager
    def training(self, trainable: Any) -> Iterator[None]:
        with super().training(trainable):
            self.model.backbone.eval()
            # a [16, D] x [D, C] head: thread fan-out costs more than it saves, and on a busy
            # machine spinning threads slow every step down many times over
            torch.set_num_threads(1)
            yield


MODES: dict[str, type[StudentMode]] = {"finetune": FinetuneMode, "frozen": FrozenMode}
