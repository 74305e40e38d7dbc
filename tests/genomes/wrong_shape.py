"""Hands in a model that returns logits for the last position only: (B, V), not (B, T, V)."""
import torch

from evolve.harness import session


class LastOnly(torch.nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 16)
        self.head = torch.nn.Linear(16, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(idx))[:, -1, :]


run = session()
run.submit(LastOnly(run.vocab_size), seq_len=16, steps=0)
