"""
GPU-scale seed genome in the nanochat / autoresearch spirit: a GPT with rotary
positions, RMSNorm, QK-norm, ReLU^2 MLP and logit soft-capping, trained by Muon
(matrices) + AdamW (embeddings, head) in bf16, compiled with torch.compile on CUDA.

Sized for one H100 and the default 300 s budget; it runs on CPU too (slowly).
Run it with `evolve eval genomes/gpt_muon.py`.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from evolve.harness import session

# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------
SEQ_LEN = 1024           # context length in tokens
BATCH_SIZE = 64          # sequences per optimizer step
DEPTH = 8                # transformer blocks
MODEL_DIM = 512          # model width
HEAD_DIM = 128           # width of one attention head
MLP_RATIO = 4            # MLP hidden width, as a multiple of MODEL_DIM
ROPE_BASE = 10000.0      # rotary base frequency
SOFTCAP = 15.0           # logits are squashed into (-SOFTCAP, SOFTCAP)
MATRIX_LR = 0.02         # Muon learning rate for 2-D weights in the blocks
EMBED_LR = 0.3           # AdamW learning rate for the token embedding
HEAD_LR = 0.004          # AdamW learning rate for the output head
MUON_MOMENTUM = 0.95     # Muon momentum (Nesterov)
NS_STEPS = 5             # Newton-Schulz iterations in Muon
ADAM_BETAS = (0.8, 0.95)  # AdamW betas
WARMUP_FRAC = 0.0        # share of the budget spent warming up
WARMDOWN_FRAC = 0.4      # share of the budget spent decaying the learning rate to 0
COMPILE = True           # torch.compile the model on CUDA
LOG_EVERY = 50           # steps between log lines


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
def rms_norm(x: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.size(-1),))


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.n_head = MODEL_DIM // HEAD_DIM
        self.qkv = nn.Linear(MODEL_DIM, 3 * MODEL_DIM, bias=False)
        self.proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)
        nn.init.zeros_(self.proj.weight)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, HEAD_DIM).transpose(1, 3).unbind(2)
        q, k = rotate(rms_norm(q), cos, sin), rotate(rms_norm(k), cos, sin)  # QK-norm + rotary
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = Attention()
        self.fc = nn.Linear(MODEL_DIM, MLP_RATIO * MODEL_DIM, bias=False)
        self.out = nn.Linear(MLP_RATIO * MODEL_DIM, MODEL_DIM, bias=False)
        nn.init.zeros_(self.out.weight)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(rms_norm(x), cos, sin)
        return x + self.out(F.relu(self.fc(rms_norm(x))).square())


class GPT(nn.Module):
    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        nn.init.zeros_(self.head.weight)
        freqs = ROPE_BASE ** (-torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
        angles = torch.outer(torch.arange(SEQ_LEN).float(), freqs)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        cos, sin = self.cos[:T].to(self.embed.weight.dtype), self.sin[:T].to(self.embed.weight.dtype)
        x = rms_norm(self.embed(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.head(rms_norm(x)).float()
        return SOFTCAP * torch.tanh(logits / SOFTCAP)


# ---------------------------------------------------------------------------
# Optimizer: Muon for matrices, AdamW for the rest
# ---------------------------------------------------------------------------
def orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Approximate U V^T of g's SVD with a quintic Newton-Schulz iteration."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Momentum, then an orthogonalized update scaled to the matrix's shape."""

    def __init__(self, params, lr: float, momentum: float, steps: int) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, steps=steps))

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p.grad))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = orthogonalize(p.grad.lerp(buf, group["momentum"]), group["steps"])
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.add_(update.to(p.dtype), alpha=-group["lr"] * scale)


def lr_scale(progress: float) -> float:
    if progress < WARMUP_FRAC:
        return progress / WARMUP_FRAC
    if progress > 1 - WARMDOWN_FRAC:
        return max(0.0, (1 - progress) / WARMDOWN_FRAC)
    return 1.0


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------
def main() -> None:
    run = session()
    cuda = run.device.startswith("cuda")
    torch.set_float32_matmul_precision("high")
    model = GPT(run.vocab_size).to(run.device)
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    adam = torch.optim.AdamW([
        {"params": [model.embed.weight], "lr": EMBED_LR, "initial_lr": EMBED_LR},
        {"params": [model.head.weight], "lr": HEAD_LR, "initial_lr": HEAD_LR},
    ], betas=ADAM_BETAS, weight_decay=0.0, fused=cuda)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, steps=NS_STEPS)
    for group in muon.param_groups:
        group["initial_lr"] = MATRIX_LR
    optimizers = [adam, muon]
    train_model = torch.compile(model) if cuda and COMPILE else model

    start, span = run.elapsed(), max(run.time_left(), 1e-6)
    batches = run.batches(BATCH_SIZE, SEQ_LEN)
    step = 0
    while run.time_left() > 0:
        scale = lr_scale((run.elapsed() - start) / span)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * scale
        x, y = next(batches)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = train_model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        step += 1
        if step % LOG_EVERY == 0:
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"loss is {value} at step {step}: training diverged")
            run.log(step=step, loss=value, lr_scale=scale)
    run.submit(model, seq_len=SEQ_LEN, steps=step)


if __name__ == "__main__":
    main()
