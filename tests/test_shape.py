"""Shape measurements the evaluator can take from an exported graph (trusted descriptors)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.harness.shape import graph_shape


class Tiny(nn.Module):
    def __init__(self, width: int = 16, vocab: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, width)
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.head = nn.Linear(width, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.emb(idx)
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(y.transpose(1, 2).reshape(b, t, c))


def export(model: nn.Module, batch: int, seq: int):
    return torch.export.export(model.eval(), (torch.zeros(batch, seq, dtype=torch.long),))


def test_context_and_macs_per_token_are_counted_from_the_graph() -> None:
    shape = graph_shape(export(Tiny(), 2, 8))
    assert shape["context"] == 8
    per_token = 16 * 48 + 16 * 32 + 2 * 2 * 8 * 8  # qkv, head, attention (2 heads of 8)
    assert shape["macs_per_token"] == per_token
    longer = graph_shape(export(Tiny(), 2, 32))
    assert longer["context"] == 32 and longer["macs_per_token"] > per_token  # attention grows
    wide = graph_shape(export(Tiny(width=32), 2, 8))
    assert wide["macs_per_token"] > 2 * per_token
