"""Write the archive fixture `export_torch<X.Y>.pt2` with the torch this interpreter has.

Run it with each torch version evolve supports (any venv with torch and numpy):
    PYTHONPATH=. python tests/data/make_archive.py tests/data
It then vets, loads and runs the archive as the evaluator would, under that torch.
The model is what a genome hands in, shrunk: an embedding, a linear head, a
buffer, a non-persistent buffer (a constant) and a tied weight (one tensor under two names).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 4)
        self.head = torch.nn.Linear(4, 64, bias=False)
        self.head.weight = self.embed.weight  # tied, as GPTs tie them
        self.register_buffer("scale", torch.full((4,), 0.5))  # a weight
        self.register_buffer("shift", torch.full((4,), 0.1), persistent=False)  # a constant

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(idx) * self.scale + self.shift)


def main() -> None:
    torch.manual_seed(0)
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    version = ".".join(torch.__version__.split("+")[0].split(".")[:2])
    model = Tiny().eval()
    with torch.no_grad():
        program = torch.export.export(model, (torch.zeros(2, 4, dtype=torch.long),))
    path = out / f"export_torch{version}.pt2"
    torch.export.save(program, str(path))
    print(path, path.stat().st_size, "bytes")
    # The evaluator's path under this same torch: vet, load, check, run (evolve on PYTHONPATH).
    from evolve.harness.graph_rules import load_model

    loaded = load_model(str(path)).module()
    idx = torch.randint(0, 64, (2, 4))
    assert torch.equal(loaded(idx), model(idx)), "the vetted copy computes something else"
    print("vetted, loaded and run by the evaluator under torch", torch.__version__)


if __name__ == "__main__":
    main()
