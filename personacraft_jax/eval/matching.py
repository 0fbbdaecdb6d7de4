"""One-to-one assignment of people to candidates under a cost threshold (Hungarian, scipy)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

NOT_FOUND = -1


def assign(cost: np.ndarray, max_cost: float, allowed: np.ndarray | None = None) -> np.ndarray:
    """Minimum-total-cost matching of rows (people) to columns (candidates).

    cost: (P, F) finite or inf; a pair is admissible when `cost <= max_cost` (and `allowed`, (P,) bool, is true
    for its row). Among admissible pairs, the matching maximises the number of matched rows first, then minimises
    the summed cost. Returns (P,) int64: the column of each row, or NOT_FOUND (-1).
    """
    cost = np.asarray(cost, np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be (P, F), got shape {cost.shape}")
    if np.isnan(cost).any():
        raise ValueError("cost contains NaN")
    num_rows, num_cols = cost.shape
    result = np.full(num_rows, NOT_FOUND, np.int64)
    admissible = cost <= max_cost
    if allowed is not None:
        allowed = np.asarray(allowed, bool)
        if allowed.shape != (num_rows,):
            raise ValueError(f"allowed must be ({num_rows},), got {allowed.shape}")
        admissible &= allowed[:, None]
    if num_rows == 0 or num_cols == 0 or not admissible.any():
        return result
    # Inadmissible pairs get a penalty larger than any sum of admissible costs, so the solver first
    # maximises the number of admissible pairs, then minimises their total cost.
    finite = np.where(admissible, cost, 0.0)
    penalty = 1.0 + np.abs(finite).sum() * 2.0
    rows, cols = linear_sum_assignment(np.where(admissible, finite, penalty))
    keep = admissible[rows, cols]
    result[rows[keep]] = cols[keep]
    return result
