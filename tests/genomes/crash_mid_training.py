"""Trains a few steps, then raises."""
import torch

from evolve.harness import session

CRASH_AT = 5

run = session()
model = torch.nn.Sequential(torch.nn.Embedding(run.vocab_size, 16), torch.nn.Linear(16, run.vocab_size))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
for step, (x, y) in enumerate(run.batches(4, 16)):
    if step == CRASH_AT:
        raise RuntimeError(f"boom at step {step}")
    loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
