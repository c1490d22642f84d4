"""PyTorch SLIP model: a dual encoder (CLIP, MetaCLIP 2, SigLIP, SigLIP 2) with per-modality graph attention over
the batch subgraph.

Reading order follows the data: the dual encoder's towers (E_v, E_t) -> GAT stacks (Eq. 3) -> fusion into node
embeddings Z (Eq. 4) -> auxiliary classifier -> the losses of `slip_hf.losses` (Eq. 1, 5, 6, 7). What differs
between dual encoders (features, base loss, padding, layer names) is read from the family's adapter
(`slip_hf.backbones`).
"""

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv
from transformers import AutoConfig, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .backbones import backbone_for_config, backbone_for_model_type
from .configuration_slip import SlipConfig
from .distributed import GlobalBatch, gather_rows, rank_and_world_size, sum_over_processes
from .graph_masks import symmetric_simple_edges
from .knowledge_encoder import SlipKnowledgeEncoder
from .losses import weighted_total_loss
from .objectives import OBJECTIVES, ForwardState, objective_batch_fields, objective_weights


def l2_normalize(embeds: torch.Tensor) -> torch.Tensor:
    """`embeds / ||embeds||_2` along the last dim, with the same operations as `CLIPModel.forward`, so that a
    SLIP model with both loss weights at 0 reproduces CLIP's loss and gradients (to the rounding of sums that
    the two code paths order differently)."""
    return embeds / embeds.pow(2).sum(dim=-1, keepdim=True).pow(0.5)


def get_activation(name: str) -> nn.Module:
    """`transformers`' activation registry plus ELU, the GAT paper's non-linearity, which it lacks."""
    return nn.ELU() if name == "elu" else ACT2FN[name]


@dataclass
class SlipOutput(ModelOutput):
    r"""
    Output of [`SlipModel.forward`]. b is the batch size, d the CLIP projection dim, d' the node dim, C the
    number of categories.

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned with `return_loss=True`):
            Total objective: Eq. 7 over every enabled objective (`slip_hf.objectives`).
        loss_clip (`torch.FloatTensor` of shape `()`, returned with `return_loss=True`):
            The backbone's image-text loss: CLIP's symmetric InfoNCE (Eq. 1) or SigLIP's pairwise sigmoid.
        loss_graph (`torch.FloatTensor` of shape `()`, returned with `return_loss=True` when the graph path is on):
            Structural contrastive loss of Eq. 5 (unweighted).
        loss_aux (`torch.FloatTensor` of shape `()`, returned with `return_loss=True`, `labels` and an aux head):
            Category cross-entropy of Eq. 6 (unweighted).
        loss_structxlip_global (`torch.FloatTensor` of shape `()`):
            StructXLIP's global edge-map/structure-caption loss (unweighted), returned with `return_loss=True` when
            the batch carries its inputs (see `slip_hf.objectives.structxlip`).
        loss_structxlip_local (`torch.FloatTensor` of shape `()`):
            StructXLIP's region/chunk loss (unweighted), likewise.
        loss_structxlip_consistency (`torch.FloatTensor` of shape `()`):
            StructXLIP's consistency loss (unweighted), likewise.
        loss_structure_clip_margin (`torch.FloatTensor` of shape `()`):
            Structure-CLIP's margin loss over scene-graph negatives (unweighted), returned with `return_loss=True`
            when the batch carries them (see `slip_hf.objectives.structure_clip`).
        loss_structure_clip_hinge (`torch.FloatTensor` of shape `()`):
            Structure-CLIP's hinge loss (unweighted), likewise.
        loss_structure_clip_negclip (`torch.FloatTensor` of shape `()`):
            InfoNCE with the scene-graph negatives among the texts (unweighted), likewise.
        logits_per_image (`torch.FloatTensor` of shape `(b, b)`):
            Scaled image-text cosine similarities (plus the learned bias of a sigmoid backbone).
        logits_per_text (`torch.FloatTensor` of shape `(b, b)`):
            Transpose of `logits_per_image`.
        image_embeds (`torch.FloatTensor` of shape `(b, d)`):
            l2-normalised CLIP image embeddings E_v.
        text_embeds (`torch.FloatTensor` of shape `(b, d)`):
            l2-normalised CLIP text embeddings E_t.
        node_embeds (`torch.FloatTensor` of shape `(b, d')`, when the graph path is on):
            l2-normalised fused node embeddings Z (Eq. 4).
        class_logits (`torch.FloatTensor` of shape `(b, C)`, when the model has an aux head):
            Category logits of the auxiliary classifier.
        num_positive_pairs (`torch.LongTensor` of shape `()`, returned with `return_loss=True` and the graph path):
            |M+|, the number of ordered positive pairs the structural loss saw in this batch.
    """

    loss: torch.FloatTensor | None = None
    loss_clip: torch.FloatTensor | None = None
    loss_graph: torch.FloatTensor | None = None
    loss_aux: torch.FloatTensor | None = None
    loss_structxlip_global: torch.FloatTensor | None = None
    loss_structxlip_local: torch.FloatTensor | None = None
    loss_structxlip_consistency: torch.FloatTensor | None = None
    loss_structure_clip_margin: torch.FloatTensor | None = None
    loss_structure_clip_hinge: torch.FloatTensor | None = None
    loss_structure_clip_negclip: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    node_embeds: torch.FloatTensor | None = None
    class_logits: torch.FloatTensor | None = None
    num_positive_pairs: torch.LongTensor | None = None


class SlipGraphEncoder(nn.Module):
    r"""A stack of graph attention layers over one modality's embeddings (Eq. 3):

    .. math::
        H^{(l+1)} = \mathrm{GAT}(H^{(l)}, A), \qquad H^{(0)} = E

    Each layer is a `torch_geometric.nn.GATConv` with `num_heads` concatenated heads of
    `hidden_size // num_heads` channels and self loops (an isolated node attends to itself), followed,
    between layers, by the activation and dropout. The self loops are appended here, once for all layers, to
    the loop-free edges the model passes (what `GATConv(add_self_loops=True)` appends after removing existing
    loops, a boolean-mask step that waits for the GPU).
    """

    def __init__(self, in_dim: int, config: SlipConfig):
        super().__init__()
        head_dim = config.graph_hidden_size // config.graph_num_heads
        dims = [in_dim] + [config.graph_hidden_size] * config.graph_num_layers
        self.layers = nn.ModuleList(
            GATConv(
                dims[i],
                head_dim,
                heads=config.graph_num_heads,
                concat=True,
                dropout=config.graph_dropout,
                add_self_loops=False,  # appended in forward
            )
            for i in range(config.graph_num_layers)
        )
        self.activation = get_activation(config.graph_activation)
        self.dropout = nn.Dropout(config.graph_dropout)

    def forward(self, embeds: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """
        Args:
            embeds (`torch.Tensor` of shape `(b, in_dim)`): H^(0).
            edge_index (`torch.LongTensor` of shape `(2, E)`): symmetric batch edges without self loops.

        Returns:
            `torch.Tensor` of shape `(b, graph_hidden_size)`: H^(L).
        """
        loops = torch.arange(embeds.size(0), device=edge_index.device).expand(2, -1)
        edge_index = torch.cat([edge_index, loops], dim=1)
        hidden = embeds
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, edge_index)
            if index < len(self.layers) - 1:
                hidden = self.dropout(self.activation(hidden))
        return hidden


class SlipFusion(nn.Module):
    r"""The projection :math:`\phi` of Eq. 4: Linear -> activation -> LayerNorm on :math:`[H_V \| H_T]`."""

    def __init__(self, config: SlipConfig):
        super().__init__()
        self.dense = nn.Linear(2 * config.graph_hidden_size, config.resolved_node_embed_dim)
        self.activation = get_activation(config.fusion_activation)
        self.layer_norm = nn.LayerNorm(config.resolved_node_embed_dim)

    def forward(self, vision_hidden: torch.Tensor, text_hidden: torch.Tensor) -> torch.Tensor:
        """`(b, hidden)`, `(b, hidden)` -> un-normalised Z of shape `(b, d')`."""
        return self.layer_norm(self.activation(self.dense(torch.cat([vision_hidden, text_hidden], dim=-1))))


class SlipPreTrainedModel(PreTrainedModel):
    config: SlipConfig
    config_class = SlipConfig
    base_model_prefix = "slip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings", "SlipGraphEncoder"]
    _supports_sdpa = True
    _supports_flash_attn = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        """`PreTrainedModel.from_pretrained`, with one-line errors for a folder that holds another model (a plain dual
        encoder: start from it with `from_dual_encoder`) and for SLIP settings that disagree with the checkpoint when
        parameter shapes do not match (e.g. another `num_labels`)."""
        if kwargs.get("config") is None:
            try:
                found = PreTrainedConfig.get_config_dict(pretrained_model_name_or_path)[0].get("model_type")
            except (OSError, ValueError):
                found = None  # no config to read: transformers' own error follows
            if found not in (None, SlipConfig.model_type):
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a `{found}` model, not a SLIP model: start SLIP from it with "
                    "SlipModel.from_dual_encoder (or --model_name_or_path, which does)."
                )
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            config_fields = set(SlipConfig.__dataclass_fields__) | {"num_labels", "id2label"}
            overrides = {key: value for key, value in kwargs.items() if key in config_fields}
            raise ValueError(
                f"The checkpoint at {pretrained_model_name_or_path!r} does not fit the requested SLIP model: "
                f"parameter shapes differ (settings passed: {overrides or 'none'}; the load report above lists the "
                "parameters, e.g. `classifier.*` for another num_labels). Pass ignore_mismatched_sizes=True to "
                "re-initialise the mismatched parameters, or load without the conflicting settings."
            ) from error

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the code that defines the model (`slip_hf.remote_code`), generated
        from the package's own modules, and `auto_map` in `config.json`: `AutoModel.from_pretrained(save_directory,
        trust_remote_code=True)` then loads it in a Python without slip_hf (torch_geometric is still needed)."""
        from .remote_code import AUTO_MAP, package_version, write_remote_code

        self.config.auto_map = dict(AUTO_MAP)
        if package_version() is not None:  # which slip_hf wrote it (not known to a remote-code copy)
            self.config.slip_hf_version = package_version()
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            write_remote_code(save_directory, type(self.config), SlipModel)
        return result

    def _init_weights(self, module: nn.Module) -> None:
        """Glorot for GAT weights and attention vectors (as torch_geometric does), Xavier for the fusion, the
        classifier and the knowledge encoder, identity LayerNorm, and the configured graph temperature and bias. The
        dual encoder's own modules are initialised by its own `PreTrainedModel` class."""
        if isinstance(module, GATConv):
            for name, param in module.named_parameters():
                if name.endswith("bias"):
                    init.zeros_(param)
                else:
                    init.xavier_uniform_(param)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.MultiheadAttention):
            init.xavier_uniform_(module.in_proj_weight)
            init.zeros_(module.in_proj_bias)
        elif isinstance(module, SlipKnowledgeEncoder):
            init.normal_(module.role_embedding, std=0.02)
            init.normal_(module.cls_embedding, std=0.02)
        elif isinstance(module, SlipModel) and module.graph_logit_scale is not None:
            init.constant_(module.graph_logit_scale, self.config.graph_logit_scale_init)
            if module.graph_logit_bias is not None:
                init.constant_(module.graph_logit_bias, self.config.graph_logit_bias_init)


class SlipModel(SlipPreTrainedModel):
    r"""
    SLIP: a dual encoder's image/text towers (`model.clip`, whatever the family: the name is kept from 0.1 so that
    saved models load unchanged; `model.dual_encoder` is the same module), one GAT stack per modality over the
    mini-batch subgraph, a fusion projection to l2-normalised node embeddings Z, and an optional linear category
    classifier applied to Z (or to :math:`[E_v \| E_t]` when `config.use_graph=False`).

    Retrieval needs no graph: `get_image_features` / `get_text_features` return the dual encoder's embeddings.

    Args:
        config ([`SlipConfig`]): the dual encoder's config and the graph, fusion, classifier and loss settings.
            Building from a config gives random weights; [`SlipModel.from_dual_encoder`] starts from a CLIP, MetaCLIP 2,
            SigLIP or SigLIP 2 checkpoint and `from_pretrained` loads a saved SLIP model.

    Example:

    ```python
    >>> from slip_hf import SlipModel
    >>> model = SlipModel.from_dual_encoder("google/siglip2-base-patch16-224", num_labels=20)
    >>> out = model(input_ids=..., attention_mask=..., pixel_values=..., edge_index=..., labels=..., return_loss=True)
    >>> out.loss, out.loss_clip, out.loss_graph, out.loss_aux
    ```
    """

    def __init__(self, config: SlipConfig):
        super().__init__(config)
        self.backbone = backbone_for_config(config.clip_config)
        self.clip = self.backbone.model_class(config.clip_config.model_type)._from_config(config.clip_config)
        self._no_split_modules = [*self.backbone.no_split_modules, "SlipGraphEncoder"]
        projection_dim = config.projection_dim
        self.vision_graph = self.text_graph = self.fusion = self.graph_logit_scale = self.graph_logit_bias = None
        self.classifier = None
        if config.use_graph:
            self.vision_graph = SlipGraphEncoder(projection_dim, config)
            self.text_graph = SlipGraphEncoder(projection_dim, config)
            self.fusion = SlipFusion(config)
            self.graph_logit_scale = nn.Parameter(
                torch.tensor(config.graph_logit_scale_init), requires_grad=config.learnable_graph_temperature
            )
            if config.resolved_graph_loss_form == "sigmoid":
                self.graph_logit_bias = nn.Parameter(torch.tensor(config.graph_logit_bias_init))
        if config.num_labels > 0:
            aux_in = config.resolved_node_embed_dim if config.use_graph else 2 * projection_dim
            self.classifier = nn.Linear(aux_in, config.num_labels)
        self.knowledge_encoder = None
        if config.use_knowledge_encoder:
            text_config = config.clip_config.text_config
            self.knowledge_encoder = SlipKnowledgeEncoder(
                text_config.hidden_size, projection_dim, config.knowledge_num_layers, config.knowledge_num_heads
            )
        # Per-epoch factors of objective weights (`slip_hf.objectives.ObjectiveWeightSchedule`); not saved.
        self.objective_weight_factors: dict[str, float] = {}
        self.post_init()

    @property
    def dual_encoder(self) -> nn.Module:
        """The wrapped dual encoder (`CLIPModel`, `MetaClip2Model`, `SiglipModel`), stored as `clip`."""
        return self.clip

    @classmethod
    def from_dual_encoder(cls, name_or_path: str | os.PathLike | PreTrainedModel, **slip_kwargs) -> "SlipModel":
        """Build a SLIP model around a pretrained dual encoder; GAT, fusion and classifier are freshly initialised.

        Args:
            name_or_path: a Hub id (`"openai/clip-vit-base-patch16"`, `"google/siglip2-base-patch16-224"`,
                `"facebook/metaclip-2-worldwide-huge-quickgelu"`), a local folder written by the family's
                `save_pretrained`, or a loaded model of a supported family (`slip_hf.backbones`).
            **slip_kwargs (`Any`): [`SlipConfig`] fields (`num_labels`, `lambda_graph`, `hops`, ...).

        Returns:
            [`SlipModel`] whose `clip` holds exactly the given weights.

        Raises:
            ValueError: in one line, for a model type without an adapter (naming the supported ones), a NaFlex SigLIP 2,
                or a SLIP checkpoint (load that with `from_pretrained`).
        """
        encoder = name_or_path
        if not isinstance(encoder, PreTrainedModel):
            model_type = AutoConfig.from_pretrained(name_or_path).model_type
            if model_type == SlipConfig.model_type:
                raise ValueError(f"{name_or_path} is a SLIP model already: load it with SlipModel.from_pretrained.")
            encoder = backbone_for_model_type(model_type).model_class(model_type).from_pretrained(name_or_path)
        backbone_for_config(encoder.config)  # a supported family, or one line that names them
        config = SlipConfig(clip_config=encoder.config, **slip_kwargs)
        model = cls(config)
        model.clip.load_state_dict(encoder.state_dict(), strict=True)
        return model

    @classmethod
    def from_clip(cls, clip_name_or_path: str | os.PathLike | PreTrainedModel, **slip_kwargs) -> "SlipModel":
        """[`from_dual_encoder`] under its 0.1-0.3 name: any supported family, not only CLIP.

        Args:
            clip_name_or_path: a dual encoder's Hub id, folder or loaded model.
            **slip_kwargs (`Any`): [`SlipConfig`] fields.

        Returns:
            [`SlipModel`].
        """
        return cls.from_dual_encoder(clip_name_or_path, **slip_kwargs)

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """The dual encoder's text embeddings (un-normalised) in `.pooler_output`, shape `(b, d)`: see its
        `get_text_features`. Texts must be tokenized by the backbone's rule (`config.backbone.tokenizer_kwargs`)."""
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def get_knowledge_features(
        self, triple_input_ids: torch.Tensor, triple_attention_mask: torch.Tensor, triple_mask: torch.Tensor
    ) -> torch.Tensor:
        """Structure-CLIP's knowledge embedding K `(b, d)` of each text's triples (zero without triples); see
        `slip_hf.knowledge_encoder`. Needs `config.use_knowledge_encoder`."""
        if self.knowledge_encoder is None:
            raise ValueError("this model has no knowledge encoder: build it with use_knowledge_encoder=True.")
        token_embedding = self.backbone.token_embedding(self.clip)
        return self.knowledge_encoder(token_embedding, triple_input_ids, triple_attention_mask, triple_mask)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """The dual encoder's image embeddings (un-normalised) in `.pooler_output`, shape `(b, d)`: see its
        `get_image_features`."""
        return self.clip.get_image_features(pixel_values=pixel_values, **kwargs)

    @torch.no_grad()
    def get_node_features(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Z (Eq. 3-4) for any set of nodes from their CLIP embeddings and the edges between them: the graph path
        run once over that graph (inference; GAT layers are inductive, so the graph can be a whole split).

        Args:
            image_embeds (`torch.Tensor` of shape `(n, d)`): CLIP image embeddings (normalised here).
            text_embeds (`torch.Tensor` of shape `(n, d)`): CLIP text embeddings (normalised here).
            edge_index (`torch.LongTensor` of shape `(2, E)`): edges between positions `0..n-1`.

        Returns:
            `torch.Tensor` of shape `(n, d')`, l2-normalised.
        """
        if not self.config.use_graph:
            raise ValueError("this model has no graph path (use_graph=False): it has no node embeddings Z.")
        device = self.fusion.dense.weight.device
        image_embeds, text_embeds = l2_normalize(image_embeds.to(device).float()), l2_normalize(text_embeds.to(device).float())
        edges = self._batch_edges(edge_index, image_embeds.size(0), device)
        return self._node_embeddings(image_embeds, text_embeds, edges)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        edge_index: torch.LongTensor | None = None,
        edge_weight: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        global_batch: GlobalBatch | None = None,
        simple_edges: bool = False,
        **objective_inputs: torch.Tensor,
    ) -> SlipOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(b, seq_len)`): tokenised texts.
            pixel_values (`torch.FloatTensor` of shape `(b, 3, H, W)`): processed images; row i pairs with text i.
            attention_mask (`torch.Tensor` of shape `(b, seq_len)`, *optional*): text padding mask.
            position_ids (`torch.LongTensor` of shape `(b, seq_len)`, *optional*): text positions.
            edge_index (`torch.LongTensor` of shape `(2, E)`, *optional*): edges of the batch subgraph G_b as
                batch positions (any direction; duplicates and self loops are ignored). `None` means no edges.
            edge_weight (`torch.FloatTensor` of shape `(E,)`, *optional*): a weight per column of `edge_index`: the
                structural loss's positive weights when `config.weights_positives` (recency / count, see
                `slip_hf.positive_weights`). The GAT layers do not read it.
            labels (`torch.LongTensor` of shape `(b,)`, *optional*): category ids for the aux loss; -100 skips.
            return_loss (`bool`, *optional*): compute the losses.
            interpolate_pos_encoding (`bool`): see `CLIPModel`.
            simple_edges (`bool`): `edge_index` already holds both directions of a simple graph (no duplicates, no
                self loops) in range, as [`SlipDataCollator`] makes it; the model then skips checking and
                deduplicating it, steps whose data-dependent shapes make the host wait for the GPU.
            global_batch ([`GlobalBatch`], *optional*): in a multi-process run, compute the losses over the global
                batch (see `slip_hf.distributed`); the logits then have shape `(n, N)` (this process's rows against
                the global batch) and each loss is this process's share, whose average over processes is the
                global loss.
            objective_inputs: the batch fields of objectives beyond SLIP's (e.g. StructXLIP's `edge_pixel_values`;
                `slip_hf.objectives.batch_preparers` makes them). An objective is computed when its weight
                `config.lambda_<name>` is not 0 (SLIP's parts also at 0, as reports) and its fields are present;
                missing fields are an error in training and skip the objective in evaluation.
        """
        unknown = set() if torch.compiler.is_compiling() else set(objective_inputs) - objective_batch_fields()
        if unknown:
            raise TypeError(f"SlipModel.forward got unknown inputs {sorted(unknown)}; objectives read {sorted(objective_batch_fields())}.")
        backbone = self.backbone
        image_embeds = l2_normalize(backbone.image_features(self.clip, pixel_values, interpolate_pos_encoding))
        text_embeds = l2_normalize(backbone.text_features(self.clip, input_ids, attention_mask, position_ids))
        rank, world = rank_and_world_size() if global_batch is not None else (0, 1)
        distributed = world > 1
        local_size, device = image_embeds.size(0), image_embeds.device
        # The batch the losses see: this process's own, or the global batch of all processes.
        image_all = gather_rows(image_embeds, global_batch.gather_with_grad) if distributed else image_embeds
        text_all = gather_rows(text_embeds, global_batch.gather_with_grad) if distributed else text_embeds
        batch_size = image_all.size(0)
        local_rows = torch.arange(rank * local_size, (rank + 1) * local_size, device=device)
        # `anchors`: the rows this process computes (None = all); a mean over them times `share` is this
        # process's share of the mean over the batch (see `slip_hf.distributed`).
        local_loss = distributed and global_batch.local_loss
        anchors = local_rows if local_loss else None
        share = world * local_size / batch_size if local_loss else 1.0

        logit_scale, logit_bias = backbone.logit_scale(self.clip).exp(), backbone.logit_bias(self.clip)
        if anchors is None:  # the dual encoder's own operations, so that zero loss weights reproduce its loss
            logits_per_text = (text_all @ image_all.T) * logit_scale
            logits_per_text = logits_per_text + logit_bias if logit_bias is not None else logits_per_text
            logits_per_image = logits_per_text.T
        else:
            logits_per_image = (image_all[anchors] @ text_all.T) * logit_scale
            logits_per_text = (text_all[anchors] @ image_all.T) * logit_scale
            if logit_bias is not None:
                logits_per_image, logits_per_text = logits_per_image + logit_bias, logits_per_text + logit_bias

        node_embeds = node_embeds_all = edges = None
        graph_is_global = not distributed or global_batch.edge_index is not None
        graph_input = (global_batch.edge_index, global_batch.edge_weight) if distributed and graph_is_global else (edge_index, edge_weight)
        if self.config.use_graph and graph_is_global:
            simple = global_batch.simple_edges if distributed else simple_edges
            edges = self._batch_edges(graph_input[0], batch_size, device, simple)
            node_embeds_all = self._node_embeddings(image_all, text_all, edges)
            node_embeds = node_embeds_all[local_rows] if distributed else node_embeds_all
        elif self.config.use_graph:  # several processes, but the graph path stays on this process's subgraph
            edges = self._batch_edges(edge_index, local_size, device, simple_edges)
            node_embeds = node_embeds_all = self._node_embeddings(image_embeds, text_embeds, edges)
        class_logits = self._class_logits(image_embeds, text_embeds, node_embeds)

        output = SlipOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            node_embeds=node_embeds,
            class_logits=class_logits,
        )
        if not return_loss:
            return output

        gather_with_grad = distributed and global_batch.gather_with_grad
        state = ForwardState(
            model=self, image_embeds=image_embeds, text_embeds=text_embeds, image_all=image_all, text_all=text_all,
            logits_per_image=logits_per_image, logits_per_text=logits_per_text, anchors=anchors, share=share, world=world,
            gather=(lambda t: gather_rows(t, gather_with_grad and t.is_floating_point())) if distributed else (lambda t: t),
            sum_over_processes=sum_over_processes, local_rows=local_rows, edges=edges, node_embeds_all=node_embeds_all,
            graph_is_global=graph_is_global, graph_input=graph_input, class_logits=class_logits, labels=labels,
            inputs=objective_inputs,
        )
        weights = objective_weights(self.config)
        parts: dict[str, torch.Tensor | None] = {}
        for name, objective in OBJECTIVES.items():
            if weights[name] == 0 and not objective.report_when_off:
                continue
            missing = [field for field in objective.batch_fields if field not in objective_inputs]
            if missing:
                if self.training:
                    raise ValueError(
                        f"objective {name!r} has weight {weights[name]} but the batch lacks {missing}: build the data "
                        "collator with slip_hf.objectives.batch_preparers(config, tokenizer, image_processor)."
                    )
                continue
            parts[name] = objective()(state)
            setattr(output, f"loss_{name}", parts[name])
        output.num_positive_pairs = state.diagnostics.get("num_positive_pairs")
        factors = self.objective_weight_factors
        output.loss = weighted_total_loss(parts, {n: w * factors[n] if n in factors else w for n, w in weights.items()})
        return output

    @staticmethod
    def _batch_edges(edge_index: torch.Tensor | None, num_nodes: int, device: torch.device, simple: bool = False) -> torch.Tensor:
        if edge_index is None:
            return torch.empty((2, 0), dtype=torch.long, device=device)
        if simple:
            return edge_index.to(device, non_blocking=True).long()
        return symmetric_simple_edges(edge_index.to(device), num_nodes)

    def _node_embeddings(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        """Eq. 3-4: per-modality GAT stacks over the batch subgraph, fused and l2-normalised into Z `(b, d')`."""
        return F.normalize(self.fusion(self.vision_graph(image_embeds, edges), self.text_graph(text_embeds, edges)), dim=-1)

    def _class_logits(self, image_embeds, text_embeds, node_embeds) -> torch.Tensor | None:
        if self.classifier is None:
            return None
        return self.classifier(node_embeds if node_embeds is not None else torch.cat([image_embeds, text_embeds], dim=-1))


__all__ = ["SlipFusion", "SlipGraphEncoder", "SlipModel", "SlipOutput", "SlipPreTrainedModel"]
