"""
Seed genome: a small GPT that learns next-byte prediction within a fixed time budget.

Run it with `evolve eval train.py`. The harness gives this script training
batches and a clock; the script hands its model in with `run.submit(...)` and
the harness scores it on held-out data (val_bpb, lower is better). Everything
below the hyperparameters is fair game for evolution; the harness is not.
Runs on CPU and CUDA (picked by the harness), with only torch.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.harness import session

# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------
SEQ_LEN = 128            # context length in tokens
BATCH_SIZE = 16          # sequences per optimizer step
N_LAYER = 3              # transformer blocks
N_HEAD = 4               # attention heads
N_EMBD = 128             # model width
MLP_RATIO = 4            # hidden width of the MLP, as a multiple of N_EMBD
LEARNING_RATE = 3e-3     # peak AdamW learning rate
WEIGHT_DECAY = 0.1       # decoupled weight decay on matrices
BETAS = (0.9, 0.95)      # AdamW betas
WARMUP_FRAC = 0.05       # share of the budget spent warming up the learning rate
WARMDOWN_FRAC = 0.4      # share of the budget spent decaying it to FINAL_LR_FRAC
FINAL_LR_FRAC = 0.05     # learning rate at the end, relative to the peak
GRAD_CLIP = 1.0          # max gradient norm
LOG_EVERY = 25           # steps between log lines


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=False)
        self.ln2 = nn.LayerNorm(N_EMBD)
        self.fc = nn.Linear(N_EMBD, MLP_RATIO * N_EMBD, bias=False)
        self.out = nn.Linear(MLP_RATIO * N_EMBD, N_EMBD, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, N_HEAD, C // N_HEAD).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab_size, N_EMBD)
        self.pos = nn.Embedding(SEQ_LEN, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def lr_scale(progress: float) -> float:
    """Warmup, constant, then linear warmdown, as a function of budget spent."""
    if progress < WARMUP_FRAC:
        return progress / WARMUP_FRAC
    if progress > 1 - WARMDOWN_FRAC:
        return max(FINAL_LR_FRAC, (1 - progress) / WARMDOWN_FRAC)
    return 1.0


def main() -> None:
    run = session()
    torch.set_float32_matmul_precision("high")
    model = GPT(run.vocab_size).to(run.device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
        lr=LEARNING_RATE, betas=BETAS,
    )
    use_bf16 = run.device.startswith("cuda")
    start, span = run.elapsed(), max(run.time_left(), 1e-6)
    batches = run.batches(BATCH_SIZE, SEQ_LEN)
    step = 0
    while run.time_left() > 0:
        progress = (run.elapsed() - start) / span
        for group in optimizer.param_groups:
            group["lr"] = LEARNING_RATE * lr_scale(progress)
        x, y = next(batches)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
            logits = model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        step += 1
        if step % LOG_EVERY == 0:
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}: training diverged")
            run.log(step=step, loss=value, lr=optimizer.param_groups[0]["lr"])
    run.submit(model, seq_len=SEQ_LEN, steps=step)


if __name__ == "__main__":
    main()
