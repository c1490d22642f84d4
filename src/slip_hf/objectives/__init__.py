"""Training objectives, one file per method, selected by name and weight.

Each registered objective `<name>` has a weight `SlipConfig.lambda_<name>` (0 = off), an output
`SlipOutput.loss_<name>`, and a command-line flag `--lambda_<name>`. SLIP's three (`clip`, `graph`, `aux`)
are on by default; StructXLIP's (`structxlip_global`, `structxlip_local`, `structxlip_consistency`) and
Structure-CLIP's (`structure_clip_margin`, `structure_clip_hinge`, `structure_clip_negclip`) are off.
Adding a method: a file here with its [`Objective`] classes, one line in `OBJECTIVES`, and its `lambda_<name>`
in `SlipConfig` (with its `loss_<name>` in `SlipOutput`).
"""

import functools

from .base import BatchPreparer, ForwardState, Objective
from .schedule import ObjectiveWeightSchedule, warmup_cosine_factor
from .slip import AuxiliaryObjective, ClipObjective, GraphObjective
from .structure_clip import (
    StructureClipHingeObjective,
    StructureClipMarginObjective,
    StructureClipNegClipObjective,
)
from .structure_clip_inputs import StructureClipBatchPreparer
from .structxlip import StructXlipConsistencyObjective, StructXlipGlobalObjective, StructXlipLocalObjective

OBJECTIVES: dict[str, type[Objective]] = {
    objective.name: objective
    for objective in (
        ClipObjective,
        GraphObjective,
        AuxiliaryObjective,
        StructXlipGlobalObjective,
        StructXlipLocalObjective,
        StructXlipConsistencyObjective,
        StructureClipMarginObjective,
        StructureClipHingeObjective,
        StructureClipNegClipObjective,
    )
}
"""Every objective by name, in the order their terms are summed."""


def objective_weights(config) -> dict[str, float]:
    """`{name: config.lambda_<name>}` for every registered objective."""
    return {name: float(getattr(config, f"lambda_{name}")) for name in OBJECTIVES}


def enabled_objectives(config) -> list[str]:
    """Names of the objectives with a non-zero weight that apply to the model, in summation order."""
    return [name for name, weight in objective_weights(config).items() if weight != 0 and OBJECTIVES[name].applies_to(config)]


def needs_scene_graphs(config) -> bool:
    """Whether an enabled objective reads the scene-graph annotation columns (`negative_caption`, `triples`)."""
    return any(OBJECTIVES[name].preparer is StructureClipBatchPreparer for name in enabled_objectives(config))


def batch_preparers(config, tokenizer=None, image_processor=None) -> list[BatchPreparer]:
    """One [`BatchPreparer`] per family of enabled objectives that needs extra batch fields (none for SLIP)."""
    kinds = []
    for name in enabled_objectives(config):
        preparer = OBJECTIVES[name].preparer
        if preparer is not None and preparer not in kinds:
            kinds.append(preparer)
    return [kind(config, tokenizer, image_processor) for kind in kinds]


@functools.cache
def objective_batch_fields() -> frozenset[str]:
    """Every batch field some objective may read (what `SlipModel.forward` accepts besides its own inputs)."""
    return frozenset(
        field for objective in OBJECTIVES.values() for field in (*objective.batch_fields, *objective.optional_fields)
    )


__all__ = [
    "OBJECTIVES",
    "BatchPreparer",
    "ForwardState",
    "Objective",
    "ObjectiveWeightSchedule",
    "batch_preparers",
    "enabled_objectives",
    "needs_scene_graphs",
    "objective_batch_fields",
    "objective_weights",
    "warmup_cosine_factor",
]
