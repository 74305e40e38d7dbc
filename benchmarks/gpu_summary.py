"""The one summary file of gpu_check.sh: figures from each step's JSON, pass/fail and seconds.

    python benchmarks/gpu_summary.py WORK_DIR MODE TOTAL_SECONDS > gpu_summary.txt

Reads what the steps left in WORK_DIR (steps.tsv, eval_*.json, overhead.json,
start_*.json, cuda_tests.log); a step that failed or timed out shows as such, with
its log's tail at the end, and the others are still reported.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def facts(mode: str) -> list[str]:
    import torch

    lines = [
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, Python {sys.version.split()[0]}"
    ]
    if mode == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"GPU {props.name}, {props.total_memory / 2**30:.1f} GiB, compute capability "
            f"{props.major}.{props.minor}, {torch.cuda.device_count()} visible"
        )
    else:
        lines.append(f"no GPU used (mode {mode})")
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    lines.append(f"evolve commit {commit or 'unknown (no git here)'}")
    return lines


def steps(work: Path) -> tuple[list[str], list[str]]:
    """One line per step, and the log tails of the steps that failed."""
    lines, tails = [], []
    tests = (
        (work / "cuda_tests.log").read_text(errors="replace").strip().splitlines()
        if (work / "cuda_tests.log").exists()
        else []
    )
    for row in (work / "steps.tsv").read_text().splitlines():
        name, rc, seconds, limit = row.split("\t")
        verdict = "pass" if rc == "0" else ("TIMEOUT" if rc in ("124", "137") else f"FAIL rc={rc}")
        extra = f"  {tests[-1].strip('= ')}" if name == "cuda_tests" and tests else ""
        lines.append(
            f"  {name:<11} {verdict:<11} {float(seconds):6.1f} s (timeout {limit} s){extra}"
        )
        log = work / f"{name}.log"
        tail = log.read_text(errors="replace").splitlines()[-TAIL:] if log.exists() else []
        if rc != "0" and tail:
            tails += ["", f"--- {name}: last {len(tail)} lines of its log ---"] + tail
    return lines, tails


TAIL = 25
RUN_KEYS = (
    "status",
    "generations",
    "evaluations",
    "elites",
    "coverage",
    "best",
    "std",
    "budget",
    "device",
    "error",
)
ELITE_KEYS = ("id", "mean", "std", "n", "generation", "operator", "params", "idea")


def record(label: str, r: dict[str, Any] | None) -> str:
    if not r:
        return f"{label}: no record (see its log)"
    if r.get("status") != "ok":
        text = f"{label}: {r.get('status')}: {r.get('reason', '')[:300]}"
        log = Path(r.get("log_path") or "/nonexistent")
        if log.is_file():  # the genome's own log: where a crash on the GPU says why
            tail = log.read_text(errors="replace").splitlines()[-TAIL:]
            text += f"\n--- last {len(tail)} lines of {log} ---\n" + "\n".join(tail)
        return text
    train = r.get("training_seconds") or 0.0
    rate = (r.get("tokens") or 0) / train if train else 0.0
    peak = r.get("peak_memory_bytes")
    peak_text = f"{peak / 2**30:.2f} GiB" if peak else "n/a"
    return (
        f"{label}: val_bpb {r['val_bpb']:.4f}, steps {r.get('steps')}, tokens {r.get('tokens')}, "
        f"tokens/s {rate:,.0f}, params {r.get('params')}, training {train:.1f} s of budget "
        f"{r.get('budget')}, wall {r.get('wall_seconds', 0):.1f} s, peak memory {peak_text}, "
        f"device {r.get('hardware', {}).get('device_name', r.get('device'))}, "
        f"sandbox {r.get('sandbox')}"
    )


def overhead(data: dict[str, Any] | None) -> list[str]:
    if not data:
        return ["overhead: no figures (see overhead.log)"]
    lines = [
        f"overhead ({data['genome']} on {data['device']}): zygote start once per run "
        f"{data['zygote_seconds']:.1f} s"
    ]
    for row in data["rows"]:
        bpb = f"{row['val_bpb']:.4f}" if row["val_bpb"] is not None else row["status"]
        lines.append(
            f"  budget {row['budget']:g} s: overhead {row['overhead_seconds']:.2f} s "
            f"({row['overhead_percent']:.1f} %), wall {row['wall_seconds']:.1f} s, "
            f"val_bpb {bpb}, steps {row['steps']}"
        )
    return lines


def search(runs: list[dict[str, Any]] | None, elites: list[dict[str, Any]] | None) -> list[str]:
    if not runs:
        return ["start: no run figures (see start.log)"]
    run = runs[0]
    lines = ["start: " + ", ".join(f"{k} {short(run[k])}" for k in RUN_KEYS if k in run)]
    for elite in (elites or [])[:3]:
        lines.append(
            "  elite: " + ", ".join(f"{k} {short(elite[k])}" for k in ELITE_KEYS if k in elite)
        )
    return lines


def short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} {short(v)}" for k, v in value.items()) + "}"
    return str(value)


def main() -> None:
    work, mode, total = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    out = [
        f"evolve GPU check, mode {mode}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"steps took {total:.0f} s (the whole must fit in 480 s)"
    ]
    out += facts(mode)
    step_lines, tails = steps(work)
    out += ["", "steps (pass/fail, seconds):"] + step_lines + [""]
    out.append(record("eval train.py", load(work / "eval_train.json")))
    out.append(record("eval gpt_muon.py", load(work / "eval_muon.json")))
    out += overhead(load(work / "overhead.json"))
    out += search(load(work / "start_runs.json"), load(work / "start_show.json"))
    out += tails
    print("\n".join(out))


if __name__ == "__main__":
    main()
