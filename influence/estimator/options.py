"""The estimator's options: what a result is named by and re-checked against on reuse."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError

ESTIMATOR_VERSION = 1
# float32 ranks as well as float64 against leave-one-out on quick (7.9k parameters) and mnist-adam (174k) at
# a quarter of the time (docs/benchmarks.md, "Precision"); float64 stays for the 2D toys (under 6k), where it
# costs 1.2x.
AFFORDABLE_FLOAT64_PARAMS = 6_000
OPTIMIZER_STATES = ("exact", "frozen")
# Version 1 of `frozen` also held Adam's whole denominator constant; version 2 is the follow-up's own
# approximation (only the incoming m and v are constants). Results of version 1 keep their own name.
FROZEN_VERSION = 2
# exact: the adjoint recursion (ASGD-Influence); the others are baselines from the same trace (`alternatives`),
# named by their key: what the recursion buys.
METHODS = {"exact": "", "no-propagation": "-noprop", "tracin": "-tracin"}


@dataclass(frozen=True)
class EstimateOptions:
    dtype: str = field(default="auto", metadata={"help": "auto (float64 for models up to 6k parameters: the 2D toys), float32, float64"})
    damping: float = field(default=0.0, metadata={"help": "u <- (1-d) u - J^T u; biases estimates toward recent steps"})
    last_steps: int | None = field(default=None, metadata={"help": "use only the last N traced steps"})
    checkpoint_every: int = field(default=25, metadata={"help": "save the backward state every N steps (resumable)"})
    optimizer_state: str = field(
        default="exact",
        metadata={"help": "exact (adjoints through Adam's/momentum's buffers) or frozen (the incoming buffers as "
                          "constants, the fresh gradient differentiated through the whole update: the 2025 "
                          "follow-up's approximation; the same as exact for plain SGD)"},
    )
    method: str = field(
        default="exact",
        metadata={"help": "exact (the adjoint carried back through every traced step), or a baseline without that "
                          "recursion: no-propagation (the metric's gradient at the end) or tracin (the metric's "
                          "gradient at each step's state), each carried only through the generator's next update"},
    )

    def key(self, metric: str, n_params: int) -> str:
        steps = f"-last{self.last_steps}" if self.last_steps else ""
        damp = f"-d{self.damping:g}" if self.damping else ""
        frozen = "-frozen" if self.optimizer_state == "frozen" else ""
        return f"{metric}-{self.resolved_dtype(n_params)}{damp}{steps}{frozen}{METHODS[self.method]}-v{self.version}"

    @property
    def version(self) -> int:
        """The version of the math behind a result with these options (in its name and meta)."""
        return FROZEN_VERSION if self.optimizer_state == "frozen" else ESTIMATOR_VERSION

    def resolved_dtype(self, n_params: int) -> str:
        if self.dtype == "auto":
            return "float64" if n_params <= AFFORDABLE_FLOAT64_PARAMS else "float32"
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype must be auto, float32 or float64, got '{self.dtype}'")
        return self.dtype

    def identity(self, n_params: int) -> dict:
        if self.optimizer_state not in OPTIMIZER_STATES:
            raise ConfigError(f"optimizer_state must be one of {OPTIMIZER_STATES}, got '{self.optimizer_state}'")
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {tuple(METHODS)}, got '{self.method}'")
        if self.method != "exact" and self.damping:
            raise ConfigError("damping applies to the exact recursion only, not to the baselines")
        d = asdict(self)
        d.pop("checkpoint_every")
        for name in ("optimizer_state", "method"):
            if d[name] == "exact":
                d.pop(name)  # results from before the option existed stay valid
        d["dtype"] = self.resolved_dtype(n_params)
        return d


def result_name(options: EstimateOptions, n_params: int) -> str:
    """The name of a result set (the key without the metric), e.g. "float64-last10-v1"."""
    return options.key("", n_params)[1:]
