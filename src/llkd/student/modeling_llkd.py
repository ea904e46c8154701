"""Sentence-embedding classifier: encoder -> pooled (optionally L2-normalised) embedding ->
linear head.

Sentence-embedding checkpoints (all-MiniLM, all-mpnet) were trained to produce a mean-pooled,
normalised embedding; their CLS pooler is untrained. Classifying from the embedding they were
trained for lets a student learn in a few dozen steps, and the same head on frozen, cached
embeddings is llkd's fast tier.

This file depends on torch and transformers only: llkd copies it into every saved student
folder, so the folder loads without llkd:

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Sentence embedding from token states: mean over real tokens, or the first token."""
    if mode == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1e-9)


class PooledEncoderClassifier(PreTrainedModel):
    """``config.llkd_pooling`` (mean | cls) and ``config.llkd_normalize`` (bool) say how the
    embedding is made; ``classifier`` is a plain linear layer on it."""

    base_model_prefix = "backbone"  # not "encoder": BERT has a submodule of that name

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.backbone = AutoModel.from_config(config)
        self.classifier = torch.nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            module.weight.data.normal_(0.0, getattr(self.config, "initializer_range", 0.02))
            module.bias.data.zero_()

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        emb = pool_hidden(hidden, attention_mask, getattr(self.config, "llkd_pooling", "mean"))
        if getattr(self.config, "llkd_normalize", False):
            emb = torch.nn.functional.normalize(emb.float(), dim=-1).to(emb.dtype)
        return emb

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.classifier(self.embed(input_ids, attention_mask, token_type_ids))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
