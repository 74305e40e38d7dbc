"""An honest small model with the parts modern genomes use: scaled_dot_product_attention,
RMSNorm, rotary embeddings, soft-capped logits, and bf16 autocast inside forward. It must be
accepted and scored."""
import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.harness import session

SEQ_LEN = 32
BATCH_SIZE = 8
DIM = 32
HEADS = 2
SOFTCAP = 15.0

run = session()


class Model(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, DIM)
        self.norm1, self.norm2 = nn.RMSNorm(DIM), nn.RMSNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM, bias=False)
        self.proj = nn.Linear(DIM, DIM, bias=False)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))
        self.head = nn.Linear(DIM, vocab, bias=False)
        half = DIM // HEADS // 2
        angles = torch.outer(torch.arange(SEQ_LEN).float(), 10000.0 ** (-torch.arange(half) / half))
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        half = x.size(-1) // 2
        x1, x2 = x[..., :half], x[..., half:]
        cos, sin = self.cos[: x.size(-2)], self.sin[: x.size(-2)]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        with torch.autocast(idx.device.type, dtype=torch.bfloat16):
            x = self.embed(idx)
            q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, HEADS, -1).transpose(1, 3).unbind(2)
            y = F.scaled_dot_product_attention(self.rotate(q), self.rotate(k), v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, DIM))
            x = x + self.mlp(self.norm2(x))
            logits = self.head(F.rms_norm(x, (DIM,))).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)


model = Model(run.vocab_size)
optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
step = 0
for x, y in run.batches(BATCH_SIZE, SEQ_LEN):
    if run.time_left() <= 0:
        break
    loss = F.cross_entropy(model(x).view(-1, run.vocab_size), y.reshape(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    step += 1
run.submit(model, seq_len=SEQ_LEN, steps=step)
