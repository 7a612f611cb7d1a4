"""Counterfactual replays: the traced steps re-run without removal sets, many at once (`lanes`)."""

from .lanes import Lane, LaneOutcome, LanePlan, first_steps, measures, replay_lanes, replayed_steps

__all__ = ["Lane", "LaneOutcome", "LanePlan", "first_steps", "measures", "replay_lanes", "replayed_steps"]
