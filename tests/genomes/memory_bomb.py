"""Allocates and touches memory until something gives."""
import torch

from evolve.harness import session

run = session()
hoard = []
while True:
    hoard.append(torch.ones(64 << 20))  # 256 MiB each
