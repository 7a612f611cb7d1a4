"""Checking estimates against what replays actually do.

- `loo`: leave-one-out accuracy (the paper's protocol: Kendall tau, Pearson r, Jaccard of the top 10%);
- `sweeps`: the data-cleansing experiment over seeds (top-k by each method, t-tests).
"""

from .loo import (SELECTIONS, Accuracy, accuracy_numbers, first_step_of_last_epochs, jaccard_top, leave_one_out,
                  select_ids, stored_validations, validate)
from .sweeps import stored_sweeps, summarize_sweep, sweep

__all__ = ["SELECTIONS", "Accuracy", "accuracy_numbers", "first_step_of_last_epochs", "jaccard_top", "leave_one_out",
           "select_ids", "stored_sweeps", "stored_validations", "summarize_sweep", "sweep", "validate"]
