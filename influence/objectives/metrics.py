"""Whole-distribution metrics as objectives: IS, FID, ALL, D-loss on the validation split with its fixed z."""

from __future__ import annotations

import torch

from ..metrics import HIGHER_IS_BETTER, METRIC_LABELS, check_metric
from .base import Objective


class MetricObjective(Objective):
    """A whole-distribution metric (IS, FID, ALL, D-loss) on the validation split with its fixed z."""

    def __init__(self, metric: str, is_2d: bool):
        check_metric(metric, is_2d)
        self.name, self.label, self.higher_is_better = metric, METRIC_LABELS[metric], HIGHER_IS_BETTER[metric]

    def values(self, ctx, theta_d: torch.Tensor, theta_g: torch.Tensor) -> torch.Tensor:
        return ctx.evaluator("valid").metric(self.name, theta_d, theta_g).reshape(1)


def metric_objectives(metrics: list[str], is_2d: bool) -> list[Objective]:
    return [MetricObjective(m, is_2d) for m in metrics]
