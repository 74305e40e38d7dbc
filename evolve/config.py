"""Run configuration: defaults, a TOML file, then command-line flags, validated once.

Everything the engine, operators and executors need to know about a run lives
in `RunConfig`; it is stored in the run's archive so `evolve resume` continues
with exactly the same settings.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evolve.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRUNE_MODES = ("off", "on", "shadow")
PRUNE_REFERENCES = ("parent", "cell")  # whose curve a child is held to (evolve.engine.pruning)
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("local", "ray")
# The grid of new runs. Bins from benchmarks/bench_search.py: a hyperparameter child moves
# log10 parameters by 0.05 to 0.6 and its context by a factor of 2, so quarter decades and
# octaves spread built-in children; LLM children also move the line count (25-line bins).
# All three are measured, not reported: parameters and context by the evaluator from the
# exported graph, lines from the source.
DEFAULT_DESCRIPTORS = [
    {"name": "model_size", "low": 4.0, "high": 7.0, "bins": 12},
    {"name": "context", "low": 3.0, "high": 11.0, "bins": 8},
    {"name": "code_size", "low": 60, "high": 260, "bins": 8},
]
DEFAULT_OPERATORS = {"hyper_mutate": 1.0, "hyper_crossover": 1.0}  # no LLM (see llm.settings)


@dataclass
class RunConfig:
    """Every setting of a run, and the one place each run default is written: the command
    line, the runner's `RunSettings` and the operator mix read theirs from here (`default`)."""

    name: str = ""
    archive_dir: str = "archive"
    seed_genomes: list[str] = field(default_factory=lambda: ["train.py"])
    pop: int = 16
    generations: int | None = None
    time_limit: float | None = None  # seconds of wall time for the whole run
    budget: float = 300.0  # seconds of training per evaluation
    grace: float | None = None  # seconds past the budget; None: max(10 s, 10 %) (RunSettings)
    data: str = "builtin"
    tokenizer: str = "byte"
    device: str = "auto"  # auto | cpu | cuda
    devices: str | None = None  # slot spec for executors: "0,1", "cpu:2x1"...
    executor: str = "local"  # local | ray
    ray_address: str | None = None
    threads: int | None = None  # CPU threads per slot (per Ray task)
    mixed_hardware: bool = False  # allow slots of different hardware classes in one run
    eval_tokens: int = 65536
    max_log_bytes: int = 16 << 20  # the genome's output kept in its log (then only the tail)
    max_disk_bytes: int = 8 << 30  # everything in the genome's folder (also caps any one file)
    max_files: int = 100_000  # files and folders in the genome's folder
    max_source_bytes: int = 64 << 10  # bigger genomes are invalid before they run
    descriptors: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(d) for d in DEFAULT_DESCRIPTORS]
    )
    operators: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OPERATORS))
    operator_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    cxpb: float = 0.2
    selection: str = "tournament"  # see benchmarks/bench_search.py (README: Search benchmark)
    exploit: float = 0.0  # share of map-elites children bred from the best elite
    screen: int = 8  # built-in map-elites children drawn per one evaluated (1: no pre-screening)
    noise_repeats: int = 3  # evaluations of the seed at the start, to measure noise
    noise_std: float | None = None  # override the measured noise (bpb)
    min_noise_std: float = 1e-3
    z: float = 2.0  # replacement margin in noise standard deviations
    confirm: int = 3  # evaluations that confirm the reported best
    strategy: str = "map-elites"  # map-elites | greedy (autoresearch) | random (children of seeds)
    race: int = 3  # a close challenger is re-evaluated up to this many evaluations (1: no racing)
    noise_prior: float = 2.0  # pseudo-evaluations of the run's noise in each genome's own spread
    max_evals: int | None = None  # stop issuing work after this many val evaluations
    rng_seed: int = 0
    llm: dict[str, Any] = field(default_factory=dict)
    seed_from: list[str] = field(default_factory=list)
    seed_top: int | None = None
    # Learning-curve pruning (evolve.engine.pruning): off | on | shadow (judge, record, stop none)
    prune: str = "off"
    prune_checkpoints: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6])  # budget shares
    prune_z: float = 3.0  # margin: z x the seed repeats' curve spread at the same training time
    prune_min_margin: float = 0.01  # the margin is at least this share of the reference loss
    prune_default_margin: float = 0.1  # share of the reference loss when no spread is measured
    # whose curve a child is held to: its parent's, or the incumbent's of its predicted cell
    prune_reference: str = "parent"
    # constants that set the model's shape: a child is only held to a curve of its own shape
    prune_shape: list[str] = field(
        default_factory=lambda: ["SEQ_LEN", "N_LAYER", "N_HEAD", "N_EMBD", "MLP_RATIO"]
    )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(
                f"unknown config key(s): {', '.join(unknown)}",
                "the run config only knows the documented keys",
                f"remove them; known keys: {', '.join(sorted(names))}",
            )
        return cls(**data)

    def validate(self) -> RunConfig:
        """Raise UserError for values that cannot make a run; return self."""
        _positive_int("pop", self.pop, "--pop")
        _positive_number("budget", self.budget, "--budget")
        if self.generations is not None:
            _positive_int("generations", self.generations, "--generations")
        if self.time_limit is not None:
            _positive_number("time_limit", self.time_limit, "--time-limit")
        _positive_int("eval_tokens", self.eval_tokens, "--eval-tokens")
        for key in ("max_log_bytes", "max_disk_bytes", "max_files"):
            _positive_int(key, getattr(self, key), f"{key} in the config file")
        _positive_int("max_source_bytes", self.max_source_bytes, "--max-source-bytes")
        _positive_int("noise_repeats", self.noise_repeats, "noise_repeats")
        _positive_int("confirm", self.confirm, "confirm")
        _positive_int("race", self.race, "race")
        if self.max_evals is not None:
            _positive_int("max_evals", self.max_evals, "--max-evals")
        if not isinstance(self.noise_prior, (int, float)) or not self.noise_prior >= 0:
            raise UserError(
                f"noise_prior is {self.noise_prior!r}",
                "it counts pseudo-evaluations of the run's noise, 0 or more",
                "set noise_prior to a number >= 0 (0: one noise level for all)",
            )
        if not isinstance(self.z, (int, float)) or not self.z >= 0:
            raise UserError(
                f"z is {self.z!r}",
                "it is a number of noise standard deviations",
                "pass --z with a value >= 0 (0: keep any child that is lower)",
            )
        from evolve.engine.strategy import check_strategy

        check_strategy(self.strategy)
        if not 0.0 <= self.cxpb <= 1.0:
            raise UserError(f"cxpb is {self.cxpb}", "it is a probability", "use a value in [0, 1]")
        if self.device not in DEVICES:
            raise UserError(
                f"unknown device {self.device!r}",
                "devices are auto, cpu or cuda",
                "pass --device auto, cpu or cuda",
            )
        if self.threads is not None:
            _positive_int("threads", self.threads, "--threads")
        _check_prune(self)
        from evolve.archive.grid import reported_descriptor

        for descriptor in self.descriptors:
            error = reported_descriptor(
                descriptor.get("name") if isinstance(descriptor, dict) else None
            )
            if error is not None:
                raise error
        if self.executor not in EXECUTORS:
            raise UserError(
                f"unknown executor {self.executor!r}",
                "executors are local and ray",
                "pass --executor local or --executor ray",
            )
        from evolve.operators.llm.settings import parse_llm
        from evolve.selection import check_method

        check_method(self.selection)
        if (
            not isinstance(self.exploit, (int, float))
            or isinstance(self.exploit, bool)
            or not 0.0 <= self.exploit <= 1.0
        ):
            raise UserError(
                f"exploit is {self.exploit!r}",
                "it is the share of children bred from the best elite",
                "set exploit to a number from 0 to 1 (0: every parent by selection)",
            )
        if (
            not isinstance(self.screen, int)
            or isinstance(self.screen, bool)
            or not (1 <= self.screen <= 64)
        ):
            raise UserError(
                f"screen is {self.screen!r}",
                "it is how many built-in children are drawn for each one evaluated",
                "set screen to a whole number from 1 to 64 (1: every child is evaluated as drawn)",
            )
        parse_llm(self.llm)  # unknown keys, bad numbers, a negative cost cap: UserError
        if not self.seed_genomes and not self.seed_from:
            raise UserError(
                "no seed genome",
                "a run starts from at least one genome",
                "pass --seed-genome FILE or --seed-from RUN",
            )
        return self


def default(key: str) -> Any:
    """RunConfig's default for `key` (a fresh copy of a list or table)."""
    spec = {f.name: f for f in dataclasses.fields(RunConfig)}[key]
    return spec.default if spec.default_factory is dataclasses.MISSING else spec.default_factory()


def _check_prune(config: RunConfig) -> None:
    if config.prune not in PRUNE_MODES:
        raise UserError(
            f"unknown prune mode {config.prune!r}",
            "pruning is off, on or shadow",
            "pass --prune off, --prune on or --prune shadow",
        )
    if config.prune_reference not in PRUNE_REFERENCES:
        raise UserError(
            f"unknown prune_reference {config.prune_reference!r}",
            "a child is held to its parent's curve or to its predicted cell's incumbent's",
            'set prune_reference = "parent" or "cell" in the config file',
        )
    points = config.prune_checkpoints
    if (
        not isinstance(points, list)
        or not 1 <= len(points) <= 8
        or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0 < p < 1 for p in points
        )
        or sorted(set(points)) != list(points)
    ):
        raise UserError(
            f"prune_checkpoints is {points!r}",
            "checkpoints are shares of the budget, strictly between 0 and 1, "
            "increasing, 1 to 8 of them",
            "use e.g. prune_checkpoints = [0.2, 0.4, 0.6] in the config file",
        )
    names = config.prune_shape
    if not isinstance(names, list) or not all(
        isinstance(n, str) and n.isidentifier() for n in names
    ):
        raise UserError(
            f"prune_shape is {names!r}",
            "prune_shape lists the names of the constants that set the model's shape",
            "use e.g. prune_shape = "
            '["N_LAYER", "N_EMBD"] in the config file ([] prunes shape changes too)',
        )
    for key in ("prune_z", "prune_min_margin", "prune_default_margin"):
        value = getattr(config, key)
        if (
            not isinstance(value, (int, float))
            or isinstance(value, bool)
            or not value >= 0
            or value != value
            or value == float("inf")
        ):
            raise UserError(
                f"{key} is {value!r}",
                f"{key} is a margin and must be a finite number of at least 0",
                f"set {key} in the config file, e.g. {getattr(RunConfig, key)}",
            )


def _positive_int(name: str, value: Any, flag: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(
            f"{name} is {value!r}",
            f"{name} must be a whole number of at least 1",
            f"pass {flag} with a positive integer",
        )


def _positive_number(name: str, value: Any, flag: str) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise UserError(
            f"{name} is {value!r}",
            f"{name} must be a positive number of seconds",
            f"pass {flag} with a value above 0",
        )


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file; every error becomes a UserError naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise UserError(
            f"config file {path} does not exist", "", "check the path given to --config"
        ) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UserError(
            f"cannot read config file {path}",
            str(exc),
            "fix the TOML syntax (see README, 'Config file')",
        ) from None


def build_config(file: str | Path | None, flags: dict[str, Any]) -> RunConfig:
    """Defaults < config file < flags given on the command line (None means not given)."""
    data: dict[str, Any] = load_toml(file) if file else {}
    from evolve.operators.llm.settings import LLM_OPERATORS, fold_flags

    flags = dict(flags)
    llm = fold_flags(data.get("llm") or {}, flags)  # --llm-* flags go into the [llm] table
    if llm:
        data["llm"] = llm
        if llm.get("models") and "operators" not in data:
            data["operators"] = dict(LLM_OPERATORS)
    data.update({k: v for k, v in flags.items() if v is not None and v != ()})
    for key in ("seed_genomes", "seed_from"):
        if key in data and isinstance(data[key], (str, tuple)):
            data[key] = [data[key]] if isinstance(data[key], str) else list(data[key])
    return RunConfig.from_dict(data).validate()
