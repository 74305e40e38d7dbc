"""Scores val_bpb ~0 without training, if the evaluator lets a graph read files: the exported
graph opens the held-out split itself (aten::from_file) and looks each context up in it.

The genome cannot read val.npy, but it knows where it lies (beside train.npy), and a
Meta kernel it registers lets torch.export trace the file read into the graph.
"""
from pathlib import Path

import torch
import torch.nn.functional as F

from evolve.harness import session

SEQ_LEN = 32
NGRAM = 8
READ_TOKENS = 8192
HEADER = 128  # what np.save writes before a small 1-D array

run = session()
VAL = str(Path(run._settings.train_path).parent / "val.npy")
lib = torch.library.Library("aten", "IMPL")
lib.impl("from_file", lambda filename, shared=None, size=0, *, dtype=None, layout=None,
         device=None, pin_memory=None: torch.empty(size, dtype=dtype, device="meta"), "Meta")


class Reader(torch.nn.Module):
    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        text = torch.from_file(VAL, size=HEADER + READ_TOKENS, dtype=torch.uint8)[HEADER:].long()
        grams = text[:-1].unfold(0, NGRAM, 1)  # (M, n): every n-gram of the held-out text
        nxt = text[NGRAM:]  # the token after each
        ctx = F.pad(idx, (NGRAM - 1, 0), value=-1).unfold(1, NGRAM, 1)  # (B, T, n), causal
        hit = (ctx[:, :, None, :] == grams[None, None]).all(-1)  # (B, T, M)
        pred = nxt[hit.int().argmax(-1)]
        found = hit.any(-1, keepdim=True)
        return F.one_hot(pred, run.vocab_size).float() * 12.0 * found


run.submit(Reader(), seq_len=SEQ_LEN, steps=0)
