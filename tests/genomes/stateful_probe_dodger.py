"""Behaves while it is probed, then cheats: a buffer that the graph increments counts the
calls, and from the call after the old probe's seven (base, five cuts, batch mixing) on,
the model predicts by reading the next token.
"""
import torch
import torch.nn.functional as F

from evolve.harness import session

SEQ_LEN = 32
HONEST_CALLS = 7

run = session()


class Dodger(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        self.calls.add_(1)
        cheat = F.one_hot(idx.roll(-1, dims=1), run.vocab_size).float() * 12.0
        cheat[:, -1] = 0.0
        return torch.where(self.calls > HONEST_CALLS, cheat, torch.zeros_like(cheat))


run.submit(Dodger(), seq_len=SEQ_LEN, steps=0)
