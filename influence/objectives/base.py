"""The Objective interface: what influence is taken on (compare kronfluence's Task).

An objective is a differentiable function of the final training state, evaluated on fixed
inputs (the validation split and its fixed z for the metrics), with one or more output rows.
The estimator carries one adjoint per row back through the traced steps (stacked), so the
influence of every training image on every row comes from one backward pass.

Sign convention, the same for every objective: influence_j ~= objective(trained without j) -
objective(trained with j). `higher_is_better` says which way the user wants the objective to
move, so harmful = removing the image moves it that way: positive influence when higher is
better (IS, ALL), negative when lower is (FID, D-loss).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Objective(ABC):
    """A differentiable function of (theta_D, generator parameters) with `rows` outputs."""

    name: str  # key of its results (metric name; sample objectives add their identity's hash)
    label: str  # for people: "FID", "realism of 16 samples"
    higher_is_better: bool
    rows: int = 1

    @property
    def harmful_sign(self) -> int:
        """+1 if a positive influence means harmful (removal raises what should be higher), -1 otherwise."""
        return 1 if self.higher_is_better else -1

    def identity(self) -> dict:
        """What the objective's results are named by, beyond its name (for example the chosen z)."""
        return {"name": self.name}

    @abstractmethod
    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        """(rows,) differentiable w.r.t. theta_d and theta_g, at the given parameters of ctx's run."""
