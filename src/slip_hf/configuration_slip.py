"""SLIP model configuration."""

import math
from typing import Literal

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .backbones import DualEncoderBackbone, backbone_for_config


@strict
class SlipConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SlipModel`]: a dual encoder (`clip_config`: CLIP, MetaCLIP 2, SigLIP or a fixed-resolution
    SigLIP 2, see `slip_hf.backbones`) plus the SLIP graph head (one GAT stack per modality, a fusion projection to
    node embeddings Z, an optional category classifier) and the weights of the SLIP objective (Eq. 7 of the paper).
    Defaults are the paper's (§4, §6.1).

    Args:
        clip_config (`dict` or `PreTrainedConfig`, *optional*):
            Configuration of the wrapped dual encoder: a `CLIPConfig`, `MetaClip2Config` or `SiglipConfig` (a dict
            names its `model_type`; one without is CLIP's). `None` gives `CLIPConfig()` (ViT-B/32-sized). The name
            is CLIP's because SLIP models of 0.1-0.3 were all CLIP: it stays so that they load unchanged;
            `dual_encoder_config` is the same object.
        use_graph (`bool`, *optional*, defaults to `True`):
            Build the graph path (GAT stacks + fusion, Eq. 3-4). `False` with `lambda_aux=0` is plain CLIP.
        graph_num_layers (`int`, *optional*, defaults to 2):
            GAT layers per modality (l = 0, 1 in Eq. 3).
        graph_hidden_size (`int`, *optional*, defaults to 512):
            Output width of every GAT layer; the heads are concatenated, each head has
            `graph_hidden_size // graph_num_heads` channels.
        graph_num_heads (`int`, *optional*, defaults to 4):
            Attention heads per GAT layer.
        graph_dropout (`float`, *optional*, defaults to 0.1):
            Dropout on GAT attention coefficients and between GAT layers.
        graph_activation (`str`, *optional*, defaults to `"elu"`):
            Non-linearity between GAT layers (ELU, as in the GAT paper).
        fusion_activation (`str`, *optional*, defaults to `"gelu"`):
            Non-linearity of the fusion projection phi (Linear -> act -> LayerNorm, Eq. 4).
        node_embed_dim (`int`, *optional*):
            Width d of Z; `None` uses the CLIP projection dim.
        hops (`int`, *optional*, defaults to 1):
            Hop threshold h of the positive mask (Eq. 2).
        hop_mode (`str`, *optional*, defaults to `"within"`):
            `"within"`: positives are nodes at distance 1..h (Eq. 2); `"exact"`: only distance exactly h (§7.1).
        graph_temperature_init (`float`, *optional*, defaults to 0.07):
            Initial temperature tau of the structural loss (S = Z Z^T / tau). Stored as a learnable log-scale
            `log(1/tau)`, initialised like CLIP's own `logit_scale` (1/0.07) and clamped to <= 100 like CLIP.
        learnable_graph_temperature (`bool`, *optional*, defaults to `True`):
            Whether tau is trained.
        graph_loss_exclude_self (`bool`, *optional*, defaults to `False`):
            Eq. 5 normalises log P over k = 1..b, i.e. *including* the anchor itself (`False`, the paper).
            `True` drops the anchor from the softmax denominator (SupCon style).
        graph_loss_on (`str`, *optional*, defaults to `"z"`):
            What the structural loss (Eq. 5) pulls together: `"z"`, the fused node embeddings Z (the paper); `"e"`, the
            CLIP-space embeddings used at query time, as the mean of Eq. 5 on the image embeddings E_v and on the text
            embeddings E_t (image-image and text-text neighbour positives); `"both"`, the mean of the Z term and the E
            term. The mask, the temperature and the weight `lambda_graph` are the same for all three.
        graph_loss_form (`str`, *optional*, defaults to `"auto"`):
            The structural loss's form: `"infonce"`, Eq. 5 (a softmax over the batch in which the graph neighbours
            are the positives, the paper's); `"sigmoid"`, a pairwise sigmoid in the manner of SigLIP, with a learned
            bias (`graph_logit_bias_init`): every ordered pair of distinct nodes is a binary problem, neighbour or not;
            `"auto"`, the form of the backbone's own loss (InfoNCE for CLIP, sigmoid for SigLIP). On the SigLIP demo the
            sigmoid form was level on same-item retrieval and ahead on related items and link prediction (the docs'
            decisions page).
        graph_logit_bias_init (`float`, *optional*, defaults to -10.0):
            Initial bias of the sigmoid form (SigLIP's own initial bias; neighbours are rare among the pairs).
        graph_loss_eps (`float`, *optional*, defaults to 1e-8):
            epsilon of Eq. 5's normaliser 1 / (|M+| + eps); a batch without edges gives a loss of exactly 0.
        positive_recency (`str`, *optional*, defaults to `"none"`):
            Recency-aware positives of the structural loss (§7.2, temporal graph refinement), from each edge's last
            co-purchase time: `"none"` (every edge weighs 1, the paper), `"window"` (edges last bought within
            `positive_recency_days` of the training graph's newest co-purchase weigh 1, older ones 0) or `"decay"`
            (weight 2^(-age / `positive_recency_days`): a half-life). See `slip_hf.positive_weights`.
        positive_recency_days (`float`, *optional*, defaults to 365.0):
            The window length or half-life, in days.
        positive_count_weighting (`str`, *optional*, defaults to `"none"`):
            Count-weighted positives: `"none"`, `"log"` (weight x log(1 + count)) or `"linear"` (x count), where
            count is the number of distinct co-buyers. Weighted positives need `hops=1` (weights live on edges).
        lambda_clip (`float`, *optional*, defaults to 1.0):
            Weight of the backbone's image-text loss: CLIP's InfoNCE (Eq. 1), or SigLIP's pairwise sigmoid. Every objective `<name>` of `slip_hf.objectives.OBJECTIVES` has a
            weight `lambda_<name>`; 0 switches it off.
        lambda_graph (`float`, *optional*, defaults to 0.05):
            Weight of the structural contrastive loss (Eq. 7).
        lambda_aux (`float`, *optional*, defaults to 0.1):
            Weight of the auxiliary classification loss (Eq. 7).
        lambda_structxlip_global (`float`, *optional*, defaults to 0.0):
            StructXLIP: edge map <-> structure-centric caption InfoNCE (reference: 0.5).
        lambda_structxlip_local (`float`, *optional*, defaults to 0.0):
            StructXLIP: caption chunks <-> edge-map regions, multi-positive InfoNCE (reference: 0.1).
        lambda_structxlip_consistency (`float`, *optional*, defaults to 0.0):
            StructXLIP: 1 - cos(image embedding, edge-map embedding) (reference: 0.05).
        structxlip_canny_low (`float`, *optional*, defaults to 0.1), structxlip_canny_high (`float`, *optional*, defaults to 0.2):
            Canny hysteresis thresholds (`kornia.filters.canny`, images in [0, 1]).
        structxlip_min_edge_fraction (`float`, *optional*, defaults to 0.002):
            An edge map with a smaller share of edge pixels counts as blank: its item takes no part.
        structxlip_num_regions (`int`, *optional*, defaults to 2):
            R: the edge map's patch tokens are pooled on an R x R grid of regions for the local loss.
        structxlip_min_region_edge_fraction (`float`, *optional*, defaults to 0.001):
            A region with a smaller share of edge pixels is not a candidate of the local loss.
        structxlip_chunk_tau (`float`, *optional*, defaults to 0.07):
            The local loss's scale is min(exp(logit_scale) / tau, 100).
        structxlip_chunk_window (`int`, *optional*, defaults to 3), structxlip_max_chunks (`int`, *optional*, defaults to 16):
            Base word window and maximum number of caption chunks.
        structxlip_remove (`list[str]`, *optional*):
            Appearance kinds removed from structure-centric captions; default all of colors, materials, textures.
        structxlip_extra_terms (`list[str]`, *optional*):
            Further words removed from structure-centric captions.
        structxlip_min_content_words (`int`, *optional*, defaults to 2):
            A filtered caption with fewer non-stopwords falls back to the original caption.
        lambda_structure_clip_margin (`float`, *optional*, defaults to 0.0):
            Structure-CLIP: true caption vs its scene-graph negative, margin loss (reference: 1.0).
        lambda_structure_clip_hinge (`float`, *optional*, defaults to 0.0):
            Structure-CLIP: hinge contrastive loss on knowledge-enhanced texts (reference: 1.0).
        lambda_structure_clip_negclip (`float`, *optional*, defaults to 0.0):
            Structure-CLIP: InfoNCE with the negatives as extra text candidates (NegCLIP style).
        structure_clip_margin (`float`, *optional*, defaults to 0.1), structure_clip_hinge_margin (`float`, *optional*, defaults to 0.2):
            Margins of the two losses (reference values).
        structure_clip_hard_negatives (`bool`, *optional*, defaults to `True`):
            Hinge loss against the hardest in-batch negatives (`False`: the mean, the reference's warm-up).
        structure_clip_replace_attributes (`bool`, *optional*, defaults to `True`):
            Also make negatives by replacing a one-object title's colour (product titles; not in the reference).
        use_knowledge_encoder (`bool`, *optional*, defaults to `False`):
            Build the Knowledge-Enhanced Encoder (`slip_hf.knowledge_encoder`); the hinge loss then uses it.
        knowledge_num_layers (`int`, *optional*, defaults to 2), knowledge_num_heads (`int`, *optional*, defaults to 4):
            Its transformer layers and heads (reference: 4 layers of BERT-base).
        knowledge_weight (`float`, *optional*, defaults to 0.01):
            w in E_t + w K (reference: 0.01).
        knowledge_max_triples (`int`, *optional*, defaults to 8), knowledge_max_tokens (`int`, *optional*, defaults to 8):
            Triples per text and tokens per triple element fed to the encoder.
        num_labels (`int`, *optional*, defaults to 0):
            Number of categories of the auxiliary classifier; 0 builds no classifier. `id2label` may be given instead.

    Example:

    ```python
    >>> from transformers import CLIPConfig, SiglipConfig
    >>> from slip_hf import SlipConfig, SlipModel
    >>> config = SlipConfig(clip_config=CLIPConfig(), num_labels=10)
    >>> model = SlipModel(config)
    >>> SlipConfig(clip_config=SiglipConfig()).resolved_graph_loss_form
    'sigmoid'
    ```
    """

    model_type = "slip"
    sub_configs_defaults = {"clip_config": SubConfigSpec(config_class=AutoConfig, model_type="clip")}

    clip_config: dict | PreTrainedConfig | None = None
    use_graph: bool = True
    graph_num_layers: int = 2
    graph_hidden_size: int = 512
    graph_num_heads: int = 4
    graph_dropout: float = 0.1
    graph_activation: str = "elu"
    fusion_activation: str = "gelu"
    node_embed_dim: int | None = None
    hops: int = 1
    hop_mode: Literal["within", "exact"] = "within"
    graph_temperature_init: float = 0.07
    learnable_graph_temperature: bool = True
    graph_loss_exclude_self: bool = False
    graph_loss_on: Literal["z", "e", "both"] = "z"
    graph_loss_form: Literal["auto", "infonce", "sigmoid"] = "auto"
    graph_logit_bias_init: float = -10.0
    graph_loss_eps: float = 1e-8
    positive_recency: Literal["none", "window", "decay"] = "none"
    positive_recency_days: float = 365.0
    positive_count_weighting: Literal["none", "log", "linear"] = "none"
    lambda_clip: float = 1.0
    lambda_graph: float = 0.05
    lambda_aux: float = 0.1
    lambda_structxlip_global: float = 0.0
    lambda_structxlip_local: float = 0.0
    lambda_structxlip_consistency: float = 0.0
    structxlip_canny_low: float = 0.1
    structxlip_canny_high: float = 0.2
    structxlip_min_edge_fraction: float = 0.002
    structxlip_num_regions: int = 2
    structxlip_min_region_edge_fraction: float = 0.001
    structxlip_chunk_tau: float = 0.07
    structxlip_chunk_window: int = 3
    structxlip_max_chunks: int = 16
    structxlip_remove: list[str] | None = None
    structxlip_extra_terms: list[str] | None = None
    structxlip_min_content_words: int = 2
    lambda_structure_clip_margin: float = 0.0
    lambda_structure_clip_hinge: float = 0.0
    lambda_structure_clip_negclip: float = 0.0
    structure_clip_margin: float = 0.1
    structure_clip_hinge_margin: float = 0.2
    structure_clip_hard_negatives: bool = True
    structure_clip_replace_attributes: bool = True
    use_knowledge_encoder: bool = False
    knowledge_num_layers: int = 2
    knowledge_num_heads: int = 4
    knowledge_weight: float = 0.01
    knowledge_max_triples: int = 8
    knowledge_max_tokens: int = 8

    def __post_init__(self, **kwargs):
        # The auxiliary head is opt-in: without `id2label`/`num_labels` a SLIP model has no classifier
        # (PreTrainedConfig would otherwise default to 2 labels).
        if self.id2label is None:
            kwargs.setdefault("num_labels", 0)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict`-powered validation: reject values that cannot build a model."""
        if self.graph_num_layers < 1:
            raise ValueError(f"graph_num_layers must be >= 1, got {self.graph_num_layers}.")
        if self.graph_hidden_size % self.graph_num_heads != 0:
            raise ValueError(
                f"graph_hidden_size ({self.graph_hidden_size}) must be divisible by graph_num_heads "
                f"({self.graph_num_heads}): heads are concatenated."
            )
        if self.hops < 1:
            raise ValueError(f"hops must be >= 1, got {self.hops}.")
        if self.hop_mode not in ("within", "exact"):
            raise ValueError(f"hop_mode must be 'within' or 'exact', got {self.hop_mode!r}.")
        backbone = self.backbone  # a one-line error for a model type without an adapter
        if self.lambda_structxlip_local != 0 and not backbone.supports_token_embeddings:
            raise ValueError(f"StructXLIP's local loss (lambda_structxlip_local) projects patch and text tokens into the "
                             f"embedding space, which a {backbone.family} backbone cannot do: set it to 0 (the global and "
                             "consistency losses work on every backbone).")
        if self.graph_loss_form not in ("auto", "infonce", "sigmoid"):
            raise ValueError(f"graph_loss_form must be 'auto', 'infonce' or 'sigmoid', got {self.graph_loss_form!r}.")
        if self.graph_loss_on not in ("z", "e", "both"):
            raise ValueError(f"graph_loss_on must be 'z', 'e' or 'both', got {self.graph_loss_on!r}.")
        if self.positive_recency not in ("none", "window", "decay"):
            raise ValueError(f"positive_recency must be 'none', 'window' or 'decay', got {self.positive_recency!r}.")
        if self.positive_count_weighting not in ("none", "log", "linear"):
            raise ValueError(f"positive_count_weighting must be 'none', 'log' or 'linear', got {self.positive_count_weighting!r}.")
        if self.positive_recency_days <= 0:
            raise ValueError(f"positive_recency_days must be > 0, got {self.positive_recency_days}.")
        if self.weights_positives and self.hops != 1:
            raise ValueError(f"weighted positives (positive_recency / positive_count_weighting) need hops=1, got hops={self.hops}.")
        if not 0.0 < self.graph_temperature_init <= 1.0:
            raise ValueError(f"graph_temperature_init must be in (0, 1], got {self.graph_temperature_init}.")
        from .objectives import OBJECTIVES

        negative = [f"lambda_{name}" for name in OBJECTIVES if getattr(self, f"lambda_{name}") < 0]
        if negative:
            raise ValueError(f"objective weights must be >= 0: {', '.join(negative)}.")
        if not 0 <= self.structxlip_canny_low <= self.structxlip_canny_high:
            raise ValueError("structxlip_canny_low must be in [0, structxlip_canny_high].")
        if self.structxlip_num_regions < 1 or self.structxlip_max_chunks < 1 or self.structxlip_chunk_window < 1:
            raise ValueError("structxlip_num_regions, structxlip_max_chunks and structxlip_chunk_window must be >= 1.")
        if self.use_knowledge_encoder and (self.knowledge_num_layers < 1 or self.knowledge_max_triples < 1):
            raise ValueError("the knowledge encoder needs knowledge_num_layers >= 1 and knowledge_max_triples >= 1.")
        if self.structxlip_chunk_tau <= 0:
            raise ValueError(f"structxlip_chunk_tau must be > 0, got {self.structxlip_chunk_tau}.")

    @property
    def weights_positives(self) -> bool:
        """Whether the structural loss weighs its positives (recency or count)."""
        return self.positive_recency != "none" or self.positive_count_weighting != "none"

    @property
    def structxlip_removed_kinds(self) -> list[str]:
        """Appearance kinds that structure-centric captions lose."""
        return list(self.structxlip_remove) if self.structxlip_remove is not None else ["colors", "materials", "textures"]

    def get_text_config(self, *args, **kwargs) -> PreTrainedConfig:
        """The text tower's config is the dual encoder's (special token ids, vocabulary), as `Trainer` and pipelines
        expect."""
        return self.clip_config.get_text_config(*args, **kwargs)

    @property
    def dual_encoder_config(self) -> PreTrainedConfig:
        """The wrapped dual encoder's config (stored as `clip_config`)."""
        return self.clip_config

    @property
    def backbone(self) -> DualEncoderBackbone:
        """The adapter of the dual encoder's family (`slip_hf.backbones`)."""
        return backbone_for_config(self.clip_config)

    @property
    def resolved_graph_loss_form(self) -> str:
        """The structural loss's form in use: `graph_loss_form`, or with `"auto"` the backbone's own (`"infonce"` for
        CLIP's family, `"sigmoid"` for SigLIP's)."""
        if self.graph_loss_form != "auto":
            return self.graph_loss_form
        return "sigmoid" if self.backbone.base_loss == "sigmoid" else "infonce"

    @property
    def projection_dim(self) -> int:
        """Width of the dual encoder's embedding space (E_v, E_t)."""
        return self.backbone.embed_dim(self.clip_config)

    @property
    def resolved_node_embed_dim(self) -> int:
        """Width d of the node embeddings Z."""
        return self.node_embed_dim if self.node_embed_dim is not None else self.projection_dim

    @property
    def graph_logit_scale_init(self) -> float:
        """`log(1/tau)` at initialisation."""
        return math.log(1.0 / self.graph_temperature_init)


__all__ = ["SlipConfig"]
