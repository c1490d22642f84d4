r"""The interface every training objective implements, and the forward state it reads.

An objective is a small callable with a name: it reads what the model computed for a batch (a
[`ForwardState`]) plus the batch fields it declares, and returns one scalar loss, or `None` where it does not
apply (the graph path is off, the batch has no labels, ...). Its weight is the config field
`lambda_<name>`, its unweighted value is reported as `SlipOutput.loss_<name>`, and the total is

.. math::
    \mathcal{L} = \mathcal{L}_{clip} + \sum_{o} \lambda_o\, s_o(t)\, \mathcal{L}_o

over the enabled objectives o (:math:`\lambda_o \neq 0`) in registration order, where :math:`s_o(t)` is an
optional per-epoch schedule factor (1 by default, see [`ObjectiveWeightSchedule`]).

In a multi-process run each objective returns *this process's share*: a value whose average over the
processes is the loss of the global batch (see `slip_hf.distributed`).
"""

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from ..modeling_slip import SlipModel


@dataclass
class ForwardState:
    """What [`SlipModel.forward`] computed for one batch, shared by the objectives.

    b is this process's batch size, N the batch the losses see (b with one process, the global batch with
    several), d the CLIP projection dim, d' the node dim.

    Attributes:
        model: the model (towers, temperatures, config).
        image_embeds, text_embeds (`(b, d)`): this process's l2-normalised CLIP embeddings E_v, E_t.
        image_all, text_all (`(N, d)`): the same for the whole batch the losses see.
        logits_per_image, logits_per_text (`(b or N, N)`): scaled similarities of the anchor rows.
        anchors (`(b,)` LongTensor or `None`): rows of the global batch this process computes; `None`: all.
        share: factor that turns a mean over the anchor rows into this process's share of the global mean.
        world: number of processes (1 without distribution).
        gather (callable): all-gathers `(b, ...)` rows into `(N, ...)` (differentiable when the run asks for
            it); the identity with one process.
        sum_over_processes (callable): sums a count over the processes; the identity with one process.
        local_rows (`(b,)` LongTensor): this process's rows in the global batch.
        edges (`(2, E)` LongTensor or `None`): symmetric edges of the subgraph the graph path used.
        node_embeds_all (`(N or b, d')` or `None`): Z for the nodes of that subgraph.
        graph_is_global: whether `edges`/`node_embeds_all` cover the global batch.
        graph_input: `(edge_index, edge_weight)` as given to the graph path (before symmetrising `edges`).
        class_logits (`(b, C)` or `None`), labels (`(b,)` or `None`): the auxiliary head's input and targets.
        inputs: the batch fields the objectives declared (`edge_pixel_values`, ...), as passed to `forward`.
        cache: per-batch results shared by several objectives (e.g. the edge-map embeddings).
        diagnostics: values objectives report besides their loss (e.g. `num_positive_pairs`).
    """

    model: "SlipModel"
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    image_all: torch.Tensor
    text_all: torch.Tensor
    logits_per_image: torch.Tensor
    logits_per_text: torch.Tensor
    anchors: torch.Tensor | None
    share: float
    world: int
    gather: Callable[[torch.Tensor], torch.Tensor]
    sum_over_processes: Callable[[torch.Tensor], torch.Tensor]
    local_rows: torch.Tensor
    edges: torch.Tensor | None = None
    node_embeds_all: torch.Tensor | None = None
    graph_is_global: bool = True
    graph_input: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)
    class_logits: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per batch, shared between objectives."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]


def float32_loss(function: Callable) -> Callable:
    """Run a loss function with autocast off, so that it computes in float32 also inside a bf16/fp16 autocast
    region (its inputs are cast with `.float()`)."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return function(*args, **kwargs)

    return wrapper


def zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A float32 zero connected to every input, so that backward gives zero (finite) gradients: the value of an
    objective for a batch in which no item qualifies."""
    return sum(t.float().sum() for t in tensors) * 0.0


class Objective(ABC):
    """One term of the training loss.

    Subclasses set `name` (weight `config.lambda_<name>`, output `loss_<name>`), `batch_fields` (what the
    collator must add to the batch; see `preparer`), `optional_fields` (read when present), `report_when_off`
    (computed and reported even with weight 0: SLIP's cheap parts), optionally `preparer` (a class that adds
    those fields to a collated batch: [`BatchPreparer`]), and implement `__call__`.
    """

    name: ClassVar[str]
    report_when_off: ClassVar[bool] = False
    batch_fields: ClassVar[tuple[str, ...]] = ()
    optional_fields: ClassVar[tuple[str, ...]] = ()
    preparer: ClassVar[type["BatchPreparer"] | None] = None

    @classmethod
    def applies_to(cls, config) -> bool:
        """Whether a model with this config can compute the objective at all (e.g. the graph loss needs the
        graph path); a weight on an objective that does not apply changes nothing."""
        return True

    @abstractmethod
    def __call__(self, state: ForwardState) -> torch.Tensor | None:
        """This process's share of the objective's loss for the batch, or `None` where it does not apply."""


class BatchPreparer(ABC):
    """Adds an objective family's fields to a collated batch (e.g. edge maps, filtered captions).

    Built once per data collator from the model config, the tokenizer and the image processor; called with
    the collated batch (tensors) and the rows it was collated from (with their raw `text` and any annotation
    columns).
    """

    needs_pixels: ClassVar[bool] = False
    """Whether it reads the batch's `pixel_values`: with the tensor image path (`slip_hf.pixels`) those exist only
    on the training device, so the trainer calls it there, after the pixel pipeline."""

    def __init__(self, config, tokenizer, image_processor):
        self.config, self.tokenizer, self.image_processor = config, tokenizer, image_processor

    @abstractmethod
    def __call__(self, batch: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Add the family's fields to `batch` in place."""


__all__ = ["BatchPreparer", "ForwardState", "Objective", "float32_loss", "zero_loss"]
