r"""Structure-CLIP's Knowledge-Enhanced Encoder (KEE): a text's scene-graph triples as one embedding.

Each element of a triple (head, relation, tail) is the mean of its CLIP token embeddings (the text tower's own
embedding table, shared); a triple is the sum of its three elements, each plus a learned role embedding
(the reference sums the three token streams in a modified BERT the same way). A learned [CLS] vector and the
triples go through `knowledge_num_layers` transformer layers; the [CLS] output, projected to the CLIP space and
l2-normalised, is the knowledge embedding K. Structure-CLIP adds it to the text embedding with a weight w:

.. math::
    \tilde E_t = E_t + w\,K

Texts without triples get K = 0. The reference encodes the triples with a separate BERT-base; sharing CLIP's
token table keeps the encoder small and the tokenizer single.
"""

import torch
import torch.nn.functional as F
from torch import nn


class SlipKnowledgeEncoder(nn.Module):
    """See the module docstring. `hidden_size` is the text tower's width, `projection_dim` the CLIP space's."""

    def __init__(self, hidden_size: int, projection_dim: int, num_layers: int, num_heads: int):
        super().__init__()
        self.role_embedding = nn.Parameter(torch.zeros(3, hidden_size))
        self.cls_embedding = nn.Parameter(torch.zeros(hidden_size))
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.projection = nn.Linear(hidden_size, projection_dim)

    def forward(
        self,
        token_embedding: nn.Embedding,
        triple_input_ids: torch.Tensor,
        triple_attention_mask: torch.Tensor,
        triple_mask: torch.Tensor,
    ) -> torch.Tensor:
        """
        Args:
            token_embedding: the CLIP text tower's token embedding table.
            triple_input_ids (`torch.LongTensor` of shape `(b, T, 3, L)`): tokens of each triple element.
            triple_attention_mask (`torch.Tensor` of shape `(b, T, 3, L)`): real tokens.
            triple_mask (`torch.BoolTensor` of shape `(b, T)`): real triples.

        Returns:
            `torch.Tensor` of shape `(b, projection_dim)`: K, l2-normalised; zero for a text without triples.
        """
        tokens = token_embedding(triple_input_ids)  # (b, T, 3, L, H)
        weights = triple_attention_mask.to(tokens.dtype).unsqueeze(-1)
        elements = (tokens * weights).sum(dim=3) / weights.sum(dim=3).clamp(min=1)  # (b, T, 3, H)
        triples = (elements + self.role_embedding).sum(dim=2)  # (b, T, H)
        cls = self.cls_embedding.expand(triples.size(0), 1, -1)
        mask = triple_mask.bool()
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        hidden = self.encoder(torch.cat([cls, triples], dim=1), src_key_padding_mask=~keep)
        knowledge = F.normalize(self.projection(hidden[:, 0]), dim=-1)
        return knowledge * mask.any(dim=1, keepdim=True).to(knowledge.dtype)


__all__ = ["SlipKnowledgeEncoder"]
