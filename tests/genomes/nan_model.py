"""Hands in a model whose weights are NaN (training diverged without noticing)."""
import torch

from evolve.harness import session

run = session()
model = torch.nn.Sequential(torch.nn.Embedding(run.vocab_size, 16), torch.nn.Linear(16, run.vocab_size))
with torch.no_grad():
    model[1].weight.fill_(float("nan"))
run.submit(model, seq_len=16, steps=0)
