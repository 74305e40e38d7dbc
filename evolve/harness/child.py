"""Entry point of the sandboxed genome process, forked from the slot's zygote (or run as
`python -m evolve.harness.child GENOME`).

Everything here runs before the first line of the genome: join the cgroups, cap
resources, seed, lock the filesystem and network down (Landlock), forbid sockets
(seccomp), drop capabilities. Then
the genome runs as `__main__`; it must end by calling `run.submit(model)`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import runpy
import sys
import time
import traceback

from evolve.harness import landlock, limits, syscalls
from evolve.harness.settings import GenomeSettings

EXIT_CRASHED, EXIT_NO_SUBMIT = 1, 3


def _prologue(settings: GenomeSettings) -> dict:
    joined = sum(limits.join_cgroup(path) for path in settings.cgroups)
    rlimits = limits.set_rlimits(settings.mem_limit, settings.max_procs, settings.max_file_bytes)
    # torch._dynamo and torch.export: seconds of imports that any optimizer and
    # submit() would otherwise bill to the genome's budget (already done in a zygote).
    import numpy as np
    import torch
    import torch._dynamo  # noqa: F401
    import torch.export  # noqa: F401

    torch.set_num_threads(settings.threads)
    random.seed(settings.seed)
    np.random.seed(settings.seed % 2**32)
    torch.manual_seed(settings.seed)
    read = landlock.python_read_paths() + [settings.train_path]
    abi = landlock.restrict(read, [os.getcwd()], landlock.device_paths(), settings.sealed)
    seccomp = syscalls.deny_sockets()
    dropped = limits.drop_capabilities()
    return {
        "landlock": abi,
        "cgroups": joined,
        "rlimits": rlimits,
        "caps_dropped": dropped,
        "seccomp": seccomp,
    }


def describe(exc: BaseException, genome: str) -> str:
    """'TypeError: message (genome.py, line 12)' on one line: what a human looks for first."""
    if isinstance(exc, SyntaxError):
        text, line = exc.msg, exc.lineno
    else:
        text, line = str(exc), None
        for frame, lineno in traceback.walk_tb(exc.__traceback__):
            if frame.f_code.co_filename == genome:
                line = lineno
    text = " ".join(str(text).split())[:300]
    where = f" ({genome}, line {line})" if line else ""
    return f"{type(exc).__name__}{': ' + text if text else ''}{where}"


def main() -> None:
    genome = sys.argv[1]
    settings = GenomeSettings.from_env()
    layers = _prologue(settings)
    # The budget starts now, after interpreter start and torch import (overhead, not
    # training), and before the first line of the genome. The runner stamps the same
    # moment on its own clock when this message arrives.
    settings = dataclasses.replace(settings, clock_start=time.monotonic())
    os.environ.update(settings.to_env())
    os.write(settings.control_fd, (json.dumps({"event": "sandbox", **layers}) + "\n").encode())
    sys.argv = [genome]
    try:
        runpy.run_path(genome, run_name="__main__")
    except SystemExit as exc:
        if exc.code is not None and not isinstance(exc.code, int):  # sys.exit("message")
            print(f"evolve: SystemExit: {exc.code}", file=sys.stderr, flush=True)
        raise
    except BaseException as exc:  # noqa: B036 - the genome's failure, reported in one line
        traceback.print_exc()
        print(f"evolve: {describe(exc, genome)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_CRASHED)
    print(
        "evolve: the genome finished without handing in a model (call run.submit(model, "
        "seq_len) at the end of training)",
        file=sys.stderr,
        flush=True,
    )
    sys.exit(EXIT_NO_SUBMIT)


if __name__ == "__main__":
    main()
