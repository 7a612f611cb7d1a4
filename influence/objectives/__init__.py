"""What influence is taken on: one interface for every objective (compare kronfluence's Task).

- `base`: `Objective`: a differentiable function of (theta_D, generator parameters) with k output rows, a name,
  an identity that enters the result's name, and a sign convention (harmful = removal moves it the way the
  user wants);
- `metrics`: IS, FID, ALL, D-loss on the validation split (`MetricObjective`);
- `samples`: objectives on chosen generated samples (realism, clarity, pull toward a reference, 2D position,
  class share), built from user input by `samples.build`.
"""

from .base import Objective
from .metrics import MetricObjective, metric_objectives
from .samples import (KINDS, Clarity, ClassShare, Position, Realism, Reference, SampleObjective, build,
                      features_of, parse)

__all__ = ["KINDS", "Clarity", "ClassShare", "MetricObjective", "Objective", "Position", "Realism", "Reference",
           "SampleObjective", "build", "features_of", "metric_objectives", "parse"]
