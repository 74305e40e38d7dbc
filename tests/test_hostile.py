"""Hostile and broken genomes: each ends as a failed or invalid record with a clear reason.

Every run happens with OPENAI_API_KEY set in this process (the `evaluate`
fixture checks that no log shows it) and with a sentinel file outside the
genome's working directory that must stay as it was.
"""

from __future__ import annotations

import os
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch

from evolve.harness import evaluate as evaluator
from evolve.harness import graph_rules, landlock
from evolve.harness.data import prepare
from evolve.runner import RunSettings, run_genome, sandbox
from tests.conftest import (
    LANDLOCK_ABI,
    ROOT,
    alive,
    genome,
    leftovers,
    needs_fence,
    needs_landlock,
    needs_scoped_signals,
    set_constants,
)

FAILED = ("crashed", "timeout", "invalid", "oom", "over_budget")


@pytest.fixture
def sentinel(tmp_path: Path):
    """A file outside every working directory; it must be unchanged after each test."""
    path = tmp_path / "sentinel.txt"
    path.write_text("untouched")
    hashes = sandbox.harness_hashes()
    yield path
    assert path.read_text() == "untouched"
    assert sandbox.harness_hashes() == hashes


def assert_failed(run, status: str, *words: str) -> None:
    result = run.result
    assert result.status == status, (result.status, result.reason, run.log[-2000:])
    for word in words:
        assert word in result.reason, (result.reason, run.log[-2000:])
    assert result.val_bpb is None and result.params is None
    assert result.status in FAILED
    assert not leftovers(run.workdir)
    os.kill(os.getpid(), 0)  # we are alive


def test_syntax_error(evaluate, sentinel):
    run = evaluate(genome("syntax_error.txt"))
    assert_failed(run, "crashed", "SyntaxError", "line 5")


def test_import_error(evaluate, sentinel):
    run = evaluate(genome("import_error.py"))
    assert_failed(run, "crashed", "ModuleNotFoundError", "evolve_no_such_module", "line 2")


def test_exception_mid_training(evaluate, sentinel):
    run = evaluate(genome("crash_mid_training.py"))
    assert_failed(run, "crashed", "RuntimeError", "boom at step 5")


def test_nan_loss(evaluate, sentinel, seed_source):
    source = set_constants(seed_source, LOG_EVERY=1).replace(
        "    use_bf16 =", "    model.head.weight.data.fill_(float('nan'))\n    use_bf16 ="
    )
    run = evaluate(source)
    assert_failed(run, "crashed", "FloatingPointError", "diverged")


def test_nan_model_is_invalid(evaluate, sentinel):
    run = evaluate(genome("nan_model.py"))
    assert_failed(run, "invalid", "not finite")


def test_infinite_loop_times_out(evaluate, sentinel):
    run = evaluate(genome("hang.py"), budget=1.0, grace=1.0)
    assert_failed(run, "timeout", "timed out", "budget + grace (2 s)", "killed")


def test_sleep_past_budget_times_out(evaluate, sentinel):
    run = evaluate(genome("sleep.py"), budget=1.0, grace=1.0)
    assert_failed(run, "timeout", "timed out")


def test_memory_bomb(evaluate, sentinel):
    run = evaluate(genome("memory_bomb.py"), mem_limit_bytes=2 << 30)
    assert_failed(run, "oom", "memory")


@needs_fence
def test_fork_bomb(evaluate, sentinel):
    run = evaluate(genome("fork_bomb.py"), budget=1.0, grace=1.0, max_procs=64)
    assert run.result.status in ("timeout", "crashed", "oom"), run.result.reason
    assert_failed(run, run.result.status)


def test_fake_val_bpb_print_is_ignored(evaluate, sentinel, seed_source):
    source = seed_source.replace(
        "    run.submit(", "    print('val_bpb: 0.1', flush=True)\n    run.submit("
    )
    run = evaluate(source, budget=2.0)
    assert "val_bpb: 0.1" in run.log
    assert run.result.status == "ok", (run.result.reason, run.log[-2000:])
    assert run.result.val_bpb > 1.0


def test_non_causal_attention(evaluate, sentinel, seed_source):
    run = evaluate(seed_source.replace("is_causal=True", "is_causal=False"), budget=1.0)
    assert_failed(run, "invalid", "non-causal")


def test_secret_not_visible(evaluate, sentinel):
    run = evaluate(genome("secret.py"))
    assert "OPENAI_API_KEY: None" in run.log
    if LANDLOCK_ABI:
        assert "/proc/" in run.log and "PermissionError" in run.log
    assert_failed(run, "crashed", "found no key")
    environ = next(line for line in run.log.splitlines() if line.startswith("environ:"))
    assert "OPENAI" not in environ and "PYTEST" not in environ


@needs_landlock
def test_write_outside_workdir(evaluate, sentinel):
    run = evaluate(genome("write_outside.py", TARGET=str(sentinel)))
    assert_failed(run, "crashed", "PermissionError", str(sentinel))


@needs_landlock
def test_edit_harness_file(evaluate, sentinel):
    target = ROOT / "evolve" / "harness" / "session.py"
    before = target.read_bytes()
    try:
        run = evaluate(genome("edit_harness.py"))
    finally:
        if target.read_bytes() != before:  # never leave the repository broken
            target.write_bytes(before)
    assert_failed(run, "crashed", "PermissionError", "session.py")


@needs_landlock
def test_cannot_read_outside(evaluate, sentinel, dataset):
    """Validation data, the data cache, shared data, archives, the evaluator's folder."""
    targets = [
        dataset.val_path,
        dataset.val_path.parent,
        dataset.val_path.parent.parent,
        ROOT.parent / "shared",
        ROOT / "archive",
        sentinel,
        "../eval",
        "..",
    ]
    targets = [str(t) for t in targets if not Path(t).is_absolute() or Path(t).exists()]
    run = evaluate(genome("read_path.py", TARGETS=targets))
    assert "LEAKED" not in run.log
    for target in targets:
        assert f"blocked {target}: PermissionError" in run.log
    assert_failed(run, "crashed", "PermissionError", f"{len(targets)} of {len(targets)} reads")


def test_wrong_output_shape(evaluate, sentinel):
    run = evaluate(genome("wrong_shape.py"))
    assert_failed(run, "invalid", "shape")


def test_trains_past_budget(evaluate, sentinel, seed_source):
    source = seed_source.replace("while run.time_left() > 0:", "while run.time_left() > -2.5:")
    run = evaluate(source, budget=1.0, grace=5.0)
    assert_failed(run, "over_budget", "trained for")
    assert run.result.training_seconds > 3.0


def test_early_training_done_then_training_on(evaluate, sentinel, seed_source):
    """Reporting the end of training early (and hiding the real report) buys no extra time:
    the model's arrival is bounded too."""
    forge = (
        "    run._send(event='training_done')\n"
        "    send = run._send\n"
        "    run._send = lambda **m: None if m['event'] == 'training_done' else send(**m)\n"
        "    use_bf16 ="
    )
    source = seed_source.replace("    use_bf16 =", forge)
    # hand-in allowed until 1 + 1 + 8 / 2 = 6 s; training ends at 6.5 s; the kill comes at 9 s
    source = source.replace("while run.time_left() > 0:", "while run.time_left() > -5.5:")
    run = evaluate(source, budget=1.0, grace=8.0)
    assert_failed(run, "over_budget", "handed in at")
    assert run.result.training_seconds < 1.0  # the forged report is all the runner saw


@needs_fence
def test_setsid_daemon_is_killed(evaluate, sentinel):
    run = evaluate(genome("setsid_daemon.py"))
    pid = int((run.workdir / "genome" / "daemon.pid").read_text())
    assert not alive(pid), f"daemon {pid} outlived the evaluation"
    assert_failed(run, "crashed", "SystemExit: left a daemon behind")


@needs_scoped_signals
def test_kill_parent(evaluate, sentinel):
    run = evaluate(genome("kill_parent.py"))
    assert_failed(run, "crashed", "PermissionError")


def test_forged_model_with_pickle_payload(evaluate, sentinel):
    run = evaluate(genome("forged_model.py"))
    assert_failed(run, "invalid", "refused")
    assert not (run.workdir / "eval" / "PWNED").exists()
    assert not (run.workdir / "genome" / "PWNED").exists()


# ---------------------------------------------------------------------------
# Hostile model files, in process: what the evaluator refuses to load


@pytest.fixture
def honest_archive(tmp_path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Embedding(256, 8), torch.nn.Linear(8, 256)).eval()
    program = torch.export.export(model, (torch.zeros(2, 4, dtype=torch.long),))
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    return path


def _tamper(path: Path, edit, extra: dict[str, bytes] | None = None) -> str:
    """A copy of the archive with `edit(name, data)` applied to each member."""
    out = path.with_name("tampered.pt2")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        for info in src.infolist():
            dst.writestr(info, edit(info.filename, src.read(info)))
        for name, data in (extra or {}).items():
            dst.writestr(f"{root}/{name}", data)
    return str(out)


def test_honest_archive_loads(honest_archive):
    program = graph_rules.load_model(str(honest_archive))
    assert program.module()(torch.zeros(2, 4, dtype=torch.long)).shape == (2, 4, 256)


def test_refuses_compiled_libraries(honest_archive):
    evil = _tamper(
        honest_archive, lambda name, data: data, {"data/aotinductor/model/model.so": b"\x7fELF"}
    )
    with pytest.raises(evaluator.Rejected, match="never writes"):
        graph_rules.load_model(evil)


def test_refuses_pickled_weights(honest_archive):
    def edit(name: str, data: bytes) -> bytes:
        return data.replace(b'"use_pickle": false', b'"use_pickle": true')

    with pytest.raises(evaluator.Rejected, match="pickled"):
        graph_rules.load_model(_tamper(honest_archive, edit))


def test_refuses_code_in_names(honest_archive):
    """FX pastes attribute names into generated Python; a quote would end the string."""

    def edit(name: str, data: bytes) -> bytes:
        return data.replace(b'"1.weight"', b'"1.weight\\")+__import__(\\"os\\").system(\\"id"')

    with pytest.raises(evaluator.Rejected, match="not a name"):
        graph_rules.load_model(_tamper(honest_archive, edit))


def test_refuses_calls_outside_aten(honest_archive):
    def edit(name: str, data: bytes) -> bytes:
        return data.replace(b"torch.ops.aten.linear.default", b"torch.os.system")

    with pytest.raises(evaluator.Rejected):  # torch's own verifier already refuses this one
        graph_rules.load_model(_tamper(honest_archive, edit))


@torch.library.custom_op("evolvetest::double", mutates_args=())
def _double(x: torch.Tensor) -> torch.Tensor:
    return x * 2


@_double.register_fake
def _(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


def test_check_graph_refuses_operators_outside_aten():
    """A graph torch accepts, calling a custom (non-ATen) operator, which could run any code."""

    class Custom(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _double(x)

    program = torch.export.export(Custom(), (torch.zeros(2, 4),))
    with pytest.raises(evaluator.Rejected, match="evolvetest.double.*not an ATen"):
        graph_rules.check_graph(program)
    graph_rules.check_graph(torch.export.export(torch.nn.Linear(4, 4), (torch.zeros(2, 4),)))


@needs_landlock
def test_builtin_heldout_sources_are_sealed(sentinel, tmp_path):
    """The builtin corpus holds out the start of the stdlib's test suite: a genome cannot read
    those files (nor val.npy), while the rest of the standard library stays importable."""
    builtin = prepare("builtin", cache_dir=tmp_path / "cache")
    heldout = Path(sysconfig.get_paths()["stdlib"]) / "test"
    if str(heldout) not in builtin.sealed:
        pytest.skip("this interpreter ships without its test suite: builtin holds out its tail")
    targets = [str(heldout / "__init__.py"), str(heldout), str(builtin.val_path)]
    source = genome("read_path.py", TARGETS=targets).replace(
        "run = session()\n",
        "run = session()\nimport tomllib, wave\n"
        "print('imported', tomllib.__name__, wave.__name__, len(open(wave.__file__).read()))\n",
    )
    result = run_genome(
        source,
        builtin,
        RunSettings(budget=2.0, threads=1, eval_tokens=2048),
        tmp_path / "work",
        tmp_path / "log",
    )
    log = (tmp_path / "log").read_text()
    assert "imported tomllib wave" in log and "LEAKED" not in log
    for target in targets:
        assert f"blocked {target}: PermissionError" in log
    assert result.status == "crashed" and "3 of 3 reads" in result.reason


def test_carve_cuts_sealed_paths_out_of_readable_folders(tmp_path):
    """Landlock only grants: a folder above a sealed path becomes its entries, down the path."""
    for rel in ("lib/a.py", "lib/test/held.py", "lib/sub/b.py", "bin/python"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "lib")
    allowed = [str(tmp_path), str(tmp_path / "lib"), str(tmp_path / "lib" / "sub")]
    carved = landlock.carve(allowed, [str(tmp_path / "link" / "test")])
    # Rules bind inodes: lib/a.py also grants link/a.py, and the sealed path is found by its
    # real path whichever name it is given by.
    assert carved == [str(tmp_path / p) for p in ("bin", "lib/a.py", "lib/sub")]
    assert landlock.carve(allowed, []) == allowed
