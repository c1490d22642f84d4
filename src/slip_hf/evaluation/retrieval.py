"""Cross-modal retrieval metrics of Table 2 of the SLIP paper, computed in chunks.

Every image queries all texts (I2T) and every text queries all images (T2I); the candidate pool is the whole
evaluated split, and the one relevant candidate of query i is its own pair i. With S = E_v E_t^T:

    rank_i2t(i) = 1 + #{j != i : S_ij > S_ii} + ties(i),    rank_t2i(j) = 1 + #{i != j : S_ij > S_jj} + ties(j)

Ties are candidates whose score is within `tie_tolerance` (default 1e-6, the float32 rounding of a cosine)
of the true pair's: the true score and its competitors come out of different float32 kernels, so closer
scores carry no order. They are counted by `ties`: `"pessimistic"` (the default; all tied candidates rank
first, so a constant model gets rank N, not 1), `"optimistic"` (none), or `"average"` (half of them).

Both directions come from one pass over row chunks of S: a chunk of `chunk_size` image rows gives the I2T
ranks of those rows and adds its column counts to the T2I ranks. Memory is O(chunk_size x N); the N x N
matrix never exists.

Reported, as in Table 2: MRR per direction and their mean; median and mean rank and Recall@{1,5,10} over
the 2N queries of both directions together (the mean rank and the recalls equal the average of the two
directions); per-direction values too.
"""

from typing import Literal

import numpy as np
import torch

TieRule = Literal["pessimistic", "optimistic", "average"]


def _as_float32(embeds) -> torch.Tensor:
    return torch.as_tensor(np.asarray(embeds) if not torch.is_tensor(embeds) else embeds).float()


@torch.no_grad()
def retrieval_ranks(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    chunk_size: int = 2048,
    ties: TieRule = "pessimistic",
    tie_tolerance: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """1-based rank of each query's true match.

    Args:
        image_embeds (`torch.Tensor` of shape `(N, d)`): image embeddings; row i pairs with text i.
        text_embeds (`torch.Tensor` of shape `(N, d)`): text embeddings.
        chunk_size: image rows per similarity block.
        ties: how candidates tied with the true pair count (see the module docstring).
        tie_tolerance: scores closer than this to the true score are ties.

    Returns:
        `(ranks_i2t, ranks_t2i)`, float64 tensors of shape `(N,)` (halves only with `ties="average"`).
    """
    image_embeds, text_embeds = _as_float32(image_embeds), _as_float32(text_embeds)
    if image_embeds.shape != text_embeds.shape or image_embeds.dim() != 2:
        raise ValueError(f"need two (N, d) matrices of the same shape, got {tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}.")
    if ties not in ("pessimistic", "optimistic", "average"):
        raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'average', got {ties!r}.")
    num = image_embeds.size(0)
    true_scores = (image_embeds * text_embeds).sum(-1)
    # Competitors at or above (true - tolerance) rank ahead pessimistically; above (true + tolerance), optimistically.
    bounds = {"pessimistic": (-tie_tolerance,), "optimistic": (tie_tolerance,), "average": (-tie_tolerance, tie_tolerance)}[ties]
    ahead_i2t = {bound: torch.zeros(num, dtype=torch.int64) for bound in bounds}
    ahead_t2i = {bound: torch.zeros(num, dtype=torch.int64) for bound in bounds}
    chunk_size = min(chunk_size, num)
    # Counting a boolean tensor into int64 costs more than the comparison; a reused buffer viewed as uint8 and
    # narrow accumulators (a column count within a chunk is at most chunk_size) keep each pass cheap.
    ahead = torch.empty((chunk_size, num), dtype=torch.bool)
    column_dtype = torch.int16 if chunk_size <= torch.iinfo(torch.int16).max else torch.int32
    for start in range(0, num, chunk_size):
        stop = min(start + chunk_size, num)
        scores = image_embeds[start:stop] @ text_embeds.T  # (c, N)
        rows = torch.arange(stop - start)
        scores[rows, rows + start] = float("-inf")  # the pair itself is not a competitor in either direction
        buffer = ahead[: stop - start]
        for bound in bounds:
            compare = torch.ge if bound < 0 else torch.gt
            compare(scores, (true_scores[start:stop] + bound)[:, None], out=buffer)
            ahead_i2t[bound][start:stop] += buffer.view(torch.uint8).sum(1, dtype=torch.int32)
            compare(scores, (true_scores + bound)[None, :], out=buffer)
            ahead_t2i[bound] += buffer.view(torch.uint8).sum(0, dtype=column_dtype)
    ranks_i2t = 1 + sum(count.double() for count in ahead_i2t.values()) / len(bounds)
    ranks_t2i = 1 + sum(count.double() for count in ahead_t2i.values()) / len(bounds)
    return ranks_i2t, ranks_t2i


def metrics_from_ranks(ranks_i2t: torch.Tensor, ranks_t2i: torch.Tensor, recall_at: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Table 2's columns (and per-direction values) from the ranks of both directions."""
    both = torch.cat([ranks_i2t, ranks_t2i])
    metrics = {
        "mrr_i2t": float((1 / ranks_i2t).mean()),
        "mrr_t2i": float((1 / ranks_t2i).mean()),
    }
    metrics["mrr"] = (metrics["mrr_i2t"] + metrics["mrr_t2i"]) / 2
    metrics["median_rank"] = float(np.median(both.numpy()))
    metrics["mean_rank"] = float(both.mean())
    for k in recall_at:
        metrics[f"recall_at_{k}"] = float((both <= k).double().mean())
        metrics[f"recall_at_{k}_i2t"] = float((ranks_i2t <= k).double().mean())
        metrics[f"recall_at_{k}_t2i"] = float((ranks_t2i <= k).double().mean())
    metrics["num_queries_per_direction"] = int(ranks_i2t.numel())
    return metrics


def retrieval_metrics(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    chunk_size: int = 2048,
    ties: TieRule = "pessimistic",
    recall_at: tuple[int, ...] = (1, 5, 10),
    tie_tolerance: float = 1e-6,
) -> dict[str, float]:
    """MRR (I2T, T2I, mean), median and mean rank, Recall@k over the pool of all N pairs.

    Embeddings need not be normalised for the ranks, but the paper's scores are cosines: pass l2-normalised
    rows (as `SlipModel`'s outputs are) to rank by cosine similarity.
    """
    return metrics_from_ranks(*retrieval_ranks(image_embeds, text_embeds, chunk_size, ties, tie_tolerance), recall_at=recall_at)


def alignment_score(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> float:
    """Mean cosine similarity of matched pairs (§3): 1 means every image sits on its text."""
    image_embeds = torch.nn.functional.normalize(_as_float32(image_embeds), dim=-1)
    text_embeds = torch.nn.functional.normalize(_as_float32(text_embeds), dim=-1)
    return float((image_embeds * text_embeds).sum(-1).mean())


__all__ = ["alignment_score", "metrics_from_ranks", "retrieval_metrics", "retrieval_ranks"]
