"""Scores well by reciting held-out text it carries (as an LLM may recall public text): the
model looks each context up in the memorised text and predicts what followed it there.

TABLE is zlib-compressed, base64 text; the test fills it in with the start of the held-out
split, which is what an evaluator that always scores the same first tokens would score.
"""
import base64
import zlib

import torch
import torch.nn.functional as F

from evolve.harness import session

SEQ_LEN = 32
NGRAM = 8
TABLE = ""

run = session()


class Recite(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        text = torch.tensor(list(zlib.decompress(base64.b64decode(TABLE))), dtype=torch.long)
        self.register_buffer("grams", text[:-1].unfold(0, NGRAM, 1).clone())
        self.register_buffer("nxt", text[NGRAM:].clone())

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        ctx = F.pad(idx, (NGRAM - 1, 0), value=-1).unfold(1, NGRAM, 1)  # (B, T, n), causal
        hit = (ctx[:, :, None, :] == self.grams[None, None]).all(-1)
        pred = self.nxt[hit.int().argmax(-1)]
        found = hit.any(-1, keepdim=True)
        return F.one_hot(pred, run.vocab_size).float() * 12.0 * found


run.submit(Recite(), seq_len=SEQ_LEN, steps=0)
