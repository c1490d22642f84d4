r"""Weights of the structural loss's positives, from the co-purchase edges' times and counts (the paper's §7.2,
"temporal graph refinement").

Eq. 5 gives every graph neighbour the same weight. Shops change: a phone's case of two years ago is no longer
what is bought with it, and a pair bought together by 40 users says more than one bought by 3. With a
weight :math:`w_{ij} \ge 0` per edge, the structural loss becomes the weighted mean

.. math::
    \mathcal{L}_{graph} = -\frac{1}{\sum_{ij} w_{ij} M^+_{ij} + \epsilon} \sum_{i,j} w_{ij} M^+_{ij} \log P_{ij}

(all weights 1 is Eq. 5 exactly). The weight of an edge is the product of a recency factor and a count factor:

* recency, from the age :math:`a` of the edge's *last* co-purchase, in days, measured from the newest
  co-purchase of the training graph (so a temporal split's cut, not the wall clock, is "now"):
  `"window"`: :math:`1` if :math:`a \le D` else :math:`0`; `"decay"`: :math:`2^{-a / D}` (D is a half-life);
* count, from the number c of distinct co-buyers: `"log"`: :math:`\log(1 + c)`; `"linear"`: :math:`c`.

Only the ratios between weights matter (the loss normalises by their sum).
"""

import numpy as np

MS_PER_DAY = 86_400_000


def positive_edge_weights(
    count: np.ndarray,
    last_time: np.ndarray,
    recency: str = "none",
    recency_days: float = 365.0,
    count_weighting: str = "none",
    reference_time: int | None = None,
) -> np.ndarray:
    """One weight per edge (see the module docstring).

    Args:
        count (`np.ndarray` of shape `(E,)`): distinct co-buyers of each edge.
        last_time (`np.ndarray` of shape `(E,)`): Unix ms of each edge's last co-purchase.
        recency: `"none"`, `"window"` or `"decay"`.
        recency_days: window length or half-life, in days.
        count_weighting: `"none"`, `"log"` or `"linear"`.
        reference_time: "now" in Unix ms; default: the newest `last_time`.

    Returns:
        `np.ndarray` of shape `(E,)`, float32, >= 0.
    """
    count = np.asarray(count, dtype=np.float64)
    last_time = np.asarray(last_time, dtype=np.int64)
    if count.shape != last_time.shape:
        raise ValueError(f"count and last_time must have the same shape, got {count.shape} and {last_time.shape}.")
    weight = np.ones(count.shape, dtype=np.float64)
    if recency != "none" and count.size:
        now = int(last_time.max()) if reference_time is None else int(reference_time)
        age = np.maximum(now - last_time, 0) / MS_PER_DAY
        if recency == "window":
            weight *= age <= recency_days
        elif recency == "decay":
            weight *= np.exp2(-age / recency_days)
        else:
            raise ValueError(f"recency must be 'none', 'window' or 'decay', got {recency!r}.")
    if count_weighting == "log":
        weight *= np.log1p(count)
    elif count_weighting == "linear":
        weight *= count
    elif count_weighting != "none":
        raise ValueError(f"count_weighting must be 'none', 'log' or 'linear', got {count_weighting!r}.")
    return weight.astype(np.float32)


def config_edge_weights(config, edges) -> np.ndarray | None:
    """The weights `config` (a [`SlipConfig`]) asks for, for an edge table with `count` and `last_time`
    columns; `None` when it weighs nothing."""
    if not config.weights_positives:
        return None
    return positive_edge_weights(
        np.asarray(edges["count"]), np.asarray(edges["last_time"]), config.positive_recency,
        config.positive_recency_days, config.positive_count_weighting,
    )


__all__ = ["config_edge_weights", "positive_edge_weights"]
