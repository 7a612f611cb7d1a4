"""ASGD-Influence for GANs (Terashita et al., ICLR 2021), exact through the optimizer's state.

Sign convention: influence_j ~= metric(trained without j) - metric(trained with j).
Harmful = removing j improves the metric: influence > 0 for IS and ALL, influence < 0 for FID and D-loss.

Modules, one concern each:
- `options`: EstimateOptions, what a result is named by;
- `backward`: the backward loop in memory (adjoints of the whole training state, block scales);
- `alternatives`: baselines from the same trace without the recursion (no-propagation, TracIn-style);
- `verdict`: the growth factor, the stability verdict and per-instance flags;
- `runner`: the stored, resumable pass and `estimate` (cached results per metric);
- `results`: results on disk, named result sets, the one in use, the influence table.
"""

from .backward import (PassState, adjoint_at, backward_step, block_scales, initial_adjoint, last_updates,
                       objective_gradients, pass_norms, player_scales, rows_per_product, start_pass, unmeasured_players,
                       walk_back)
from .options import (AFFORDABLE_FLOAT64_PARAMS, ESTIMATOR_VERSION, FROZEN_VERSION, METHODS, OPTIMIZER_STATES,
                      EstimateOptions, result_name)
from .results import (CHOSEN, InfluenceResult, cached_results, choose_results, chosen_name, harmful_order,
                      influence_table, load_result, result_dir, result_sets, table_metadata, write_table)
from .runner import (check_options, check_window, drop_partial, estimate, partial_folder, stored_pass, training_context,
                     window_first)
from .verdict import (FLAG_DOUBTFUL, FLAG_NAMES, FLAG_NEVER_TRACED, FLAG_NOT_ASSESSED, FLAG_RELIABLE, FLAG_UNRELIABLE,
                      GROWTH_DOUBTFUL, GROWTH_UNRELIABLE, growth_of, instance_flags, verdict_for)

__all__ = [
    "AFFORDABLE_FLOAT64_PARAMS", "CHOSEN", "ESTIMATOR_VERSION", "FLAG_DOUBTFUL", "FLAG_NAMES", "FLAG_NEVER_TRACED",
    "FLAG_NOT_ASSESSED", "FLAG_RELIABLE", "FLAG_UNRELIABLE", "FROZEN_VERSION", "GROWTH_DOUBTFUL",
    "GROWTH_UNRELIABLE", "METHODS", "OPTIMIZER_STATES", "EstimateOptions", "InfluenceResult", "PassState",
    "adjoint_at", "backward_step", "block_scales", "cached_results", "check_options", "check_window", "choose_results",
    "chosen_name", "drop_partial", "estimate", "partial_folder", "growth_of", "harmful_order", "influence_table", "initial_adjoint",
    "instance_flags", "last_updates", "load_result", "objective_gradients", "pass_norms", "player_scales",
    "result_dir", "result_name", "result_sets", "start_pass", "stored_pass", "table_metadata", "training_context",
    "rows_per_product", "unmeasured_players", "verdict_for", "walk_back", "window_first", "write_table",
]
