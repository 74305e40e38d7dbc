"""Entry point of the sandboxed genome process: `python -m evolve.harness.child GENOME`.

Everything here runs before the first line of the genome: join the cgroup, cap
resources, seed, lock the filesystem and network down, drop capabilities. Then
the genome runs as `__main__`; it must end by calling `run.submit(model)`.
"""

from __future__ import annotations

import json
import os
import random
import runpy
import sys

from evolve.harness import landlock, limits
from evolve.harness.session import ENV_VAR

EXIT_NO_SUBMIT = 3


def _prologue(config: dict) -> dict:
    joined = limits.join_cgroup(config.get("cgroup"))
    rlimits = limits.set_rlimits(config.get("mem_limit"), config.get("max_procs"),
                                 int(config["max_file_bytes"]))
    import numpy as np
    import torch

    torch.set_num_threads(int(config["threads"]))
    random.seed(config["seed"])
    np.random.seed(config["seed"] % 2**32)
    torch.manual_seed(config["seed"])
    read = landlock.python_read_paths() + [config["train_path"]]
    abi = landlock.restrict(read, [os.getcwd()], landlock.device_paths())
    dropped = limits.drop_capabilities()
    return {"landlock": abi, "cgroup": joined, "rlimits": rlimits, "caps_dropped": dropped}


def main() -> None:
    genome = sys.argv[1]
    config = json.loads(os.environ[ENV_VAR])
    layers = _prologue(config)
    os.write(int(config["control_fd"]), (json.dumps({"event": "sandbox", **layers}) + "\n").encode())
    sys.argv = [genome]
    runpy.run_path(genome, run_name="__main__")
    print("evolve: the genome finished without handing in a model (call run.submit(model, "
          "seq_len) at the end of training)", file=sys.stderr, flush=True)
    sys.exit(EXIT_NO_SUBMIT)


if __name__ == "__main__":
    main()
