"""Per-epoch weight schedules of objectives: StructXLIP's linear warm-up, plateau and cosine decay to a floor."""

import math

from transformers import TrainerCallback


def warmup_cosine_factor(epoch: float, warmup: int = 1, decay_start: int = 1, decay_end: int = 8, floor: float = 0.5) -> float:
    r"""The factor s(t) of an objective's weight at epoch t (0-based):

    .. math::
        s(t) = \begin{cases} (t + 1) / w & t < w \\ 1 & w \le t < t_0 \\
        f + (1 - f)\,\tfrac12\big(1 + \cos(\pi \min(t - t_0, t_1 - t_0) / (t_1 - t_0))\big) & t \ge t_0 \end{cases}

    with warm-up w, decay start t_0, decay end t_1 and floor f (the reference's `cosine_anneal_warm_decay`).
    """
    if epoch < warmup:
        return (epoch + 1) / max(1, warmup)
    if epoch < decay_start:
        return 1.0
    span = max(1e-6, decay_end - decay_start)
    progress = min(epoch - decay_start, span)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress / span))


class ObjectiveWeightSchedule(TrainerCallback):
    """Sets `model.objective_weight_factors[name] = s(epoch)` at the start of every epoch for the named
    objectives (the factor multiplies `lambda_<name>`; it is not saved with the model).

    Args:
        names: objectives to schedule, e.g. StructXLIP's three.
        warmup, decay_start, decay_end, floor: see [`warmup_cosine_factor`].
    """

    def __init__(self, names: list[str], warmup: int = 1, decay_start: int = 1, decay_end: int = 8, floor: float = 0.5):
        self.names = list(names)
        self.settings = {"warmup": warmup, "decay_start": decay_start, "decay_end": decay_end, "floor": floor}

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            factor = warmup_cosine_factor(int(state.epoch or 0), **self.settings)
            model.objective_weight_factors.update(dict.fromkeys(self.names, factor))


__all__ = ["ObjectiveWeightSchedule", "warmup_cosine_factor"]
