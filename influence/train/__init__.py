"""Training with a recorded trace, and counterfactual replay of that trace.

Every step is `stepmap.step` (SGD, momentum or Adam; simultaneous or alternating; optional EMA generator).
`trace`: what the trace of the last K epochs (or last N steps) holds and how it is stored; `schedule`: the steps of
an epoch and the traced range; `loop`: epochs, retraining without instances, in-memory segments; `run`: a run in
the store (checkpoint after every epoch, resume from the last one, the trace-lr probe, the finished run's files);
`replay`: the traced steps re-run with instances removed, which the estimator walks backwards.
"""

from .loop import Segment, initial_train_state, record_segment, run_epoch, train_without
from .replay import replay, replay_state
from .run import CHECKPOINT, TRACE_LR_RECORD, checkpoint_history, image_grid_png, load_history, pin_feature_net, train
from .schedule import chosen_traced_lr, epoch_kinds, epoch_lr, first_traced_epoch, steps_per_epoch, traced_step_range
from .trace import TRACE_FILES, Trace, states_backward, step_input_bytes, storage_for, to_state, trace_inputs

__all__ = ["CHECKPOINT", "TRACE_FILES", "TRACE_LR_RECORD", "Segment", "Trace", "checkpoint_history",
           "chosen_traced_lr", "epoch_kinds", "epoch_lr", "first_traced_epoch", "image_grid_png",
           "initial_train_state", "load_history", "pin_feature_net", "record_segment", "replay", "replay_state",
           "run_epoch", "states_backward", "step_input_bytes", "steps_per_epoch", "storage_for", "to_state",
           "trace_inputs", "traced_step_range", "train", "train_without"]
