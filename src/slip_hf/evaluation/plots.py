"""The paper's two figures, for any set of checkpoints side by side.

* Fig. 5: densities (Gaussian KDE) of image-text cosine similarity between nodes grouped by their hop
  distance in the co-purchase graph (0 = the node's own pair, 1 = direct neighbours, 2, 3).
* Fig. 4: a retrieval grid: for one query title, each model's top-k images, the true match framed and
  annotated with its rank.
"""

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.stats import gaussian_kde  # noqa: E402

from ..graph_batching import NodeGraph  # noqa: E402

HOP_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a")


def similarity_by_hop(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    node_ids: Sequence[int],
    graph: NodeGraph,
    max_hops: int = 3,
    num_sources: int = 300,
    max_pairs_per_hop: int = 20000,
    seed: int = 0,
) -> dict[int, np.ndarray]:
    """Cosines `image(i) . text(j)` for sampled nodes i and nodes j at each hop distance 0..max_hops.

    Args:
        image_embeds, text_embeds (`torch.Tensor` of shape `(N, d)`): l2-normalised embeddings of the nodes
            `node_ids` (row r is node `node_ids[r]`).
        node_ids: global node ids of the rows; hop distances are measured in the whole `graph`, and j ranges
            over these nodes.
        graph: the dataset graph.

    Returns:
        `{hop: similarities}` (float arrays; at most `max_pairs_per_hop` each, sampled when more).
    """
    rng = np.random.default_rng(seed)
    node_ids = np.asarray(node_ids, dtype=np.int64)
    position = np.full(graph.num_nodes, -1, dtype=np.int64)
    position[node_ids] = np.arange(node_ids.size)
    sources = rng.choice(node_ids.size, size=min(num_sources, node_ids.size), replace=False)
    distances = graph.hop_distances_from(node_ids[sources], max_hops)[:, node_ids]  # (S, N)
    image, text = image_embeds.float().numpy(), text_embeds.float().numpy()
    result = {}
    for hop in range(max_hops + 1):
        rows, cols = np.nonzero(distances == hop)
        if rows.size > max_pairs_per_hop:
            keep = rng.choice(rows.size, size=max_pairs_per_hop, replace=False)
            rows, cols = rows[keep], cols[keep]
        result[hop] = (image[sources[rows]] * text[cols]).sum(-1)
    return result


def plot_similarity_by_hop(panels: Mapping[str, Mapping[int, np.ndarray]], path: str | os.PathLike) -> str:
    """One KDE panel per checkpoint (Fig. 5); returns the PNG's path."""
    figure, axes = plt.subplots(1, len(panels), figsize=(max(6.0, 4.2 * len(panels)), 3.6), sharey=False, squeeze=False)
    grid = np.linspace(-1, 1, 400)
    for axis, (name, by_hop) in zip(axes[0], panels.items()):
        for hop, values in by_hop.items():
            label = "0-hop (self)" if hop == 0 else f"{hop}-hop"
            if values.size >= 2 and np.ptp(values) > 0:
                axis.plot(grid, gaussian_kde(values)(grid), color=HOP_COLORS[hop % len(HOP_COLORS)], label=f"{label} (n={values.size})")
                axis.axvline(values.mean(), color=HOP_COLORS[hop % len(HOP_COLORS)], linestyle=":", linewidth=1)
        axis.set_title(name)
        axis.set_xlabel("image-text cosine similarity")
        axis.set_xlim(-0.6, 1.0)
        axis.legend(fontsize=7)
    axes[0][0].set_ylabel("density")
    figure.suptitle("Image-text similarity by co-purchase hop distance")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return str(path)


def plot_retrieval_grid(
    query: str,
    images: Sequence[Image.Image],
    rankings: Mapping[str, Sequence[int]],
    true_index: int,
    true_ranks: Mapping[str, int],
    path: str | os.PathLike,
) -> str:
    """Each model's top-k images for a text query, the true match framed and annotated (Fig. 4).

    Args:
        query: the query title.
        images: the candidate pool's images (indexable by candidate index).
        rankings: `{model: top-k candidate indices, best first}`.
        true_index: the candidate that is the query's own image.
        true_ranks: `{model: rank of the true match in the whole pool}` (shown when it is outside the top k).
        path: PNG to write.
    """
    k = max(len(ranking) for ranking in rankings.values())
    figure, axes = plt.subplots(len(rankings), k, figsize=(1.45 * k, 1.75 * len(rankings)), squeeze=False)
    for row, (name, ranking) in enumerate(rankings.items()):
        for column in range(k):
            axis = axes[row][column]
            axis.set_xticks([])
            axis.set_yticks([])
            if column >= len(ranking):
                axis.axis("off")
                continue
            candidate = int(ranking[column])
            axis.imshow(images[candidate])
            hit = candidate == true_index
            for spine in axis.spines.values():
                spine.set_edgecolor("#2ca02c" if hit else "#bbbbbb")
                spine.set_linewidth(4 if hit else 0.8)
            if hit:
                axis.set_title(f"match, rank {column + 1}", fontsize=7, color="#2ca02c")
        axes[row][0].set_ylabel(f"{name}\n(true rank {true_ranks[name]})", fontsize=8)
    figure.suptitle(f"Text-to-image retrieval for: {query!r}", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return str(path)


def write_figures(
    models: Mapping[str, tuple[torch.Tensor, torch.Tensor, np.ndarray]],
    eval_dataset,
    graph: NodeGraph,
    out_dir: str | os.PathLike,
    text_column: str = "title",
    image_column: str = "image",
    seed: int = 0,
) -> dict[str, str]:
    """Fig. 5 and Fig. 4 for one or several models side by side, into `out_dir`.

    Args:
        models: `{name: (image_embeds, text_embeds, node_ids)}`, the l2-normalised embeddings of
            `eval_dataset`'s rows (row i = node `node_ids[i]`), all in the same row order.
        eval_dataset: the evaluated split (a `datasets.Dataset` with the texts and images).
        graph: the dataset graph, for the hop distances.
        seed: picks the sampled nodes and the grid's query.

    Returns:
        `{"similarity_by_hop": path, "retrieval_grid": path}`.
    """
    out_dir = Path(out_dir)
    panels = {name: similarity_by_hop(image, text, node_ids, graph, seed=seed) for name, (image, text, node_ids) in models.items()}
    hop_path = plot_similarity_by_hop(panels, out_dir / "similarity_by_hop.png")
    query = int(np.random.default_rng(seed).integers(0, len(eval_dataset)))
    rankings, true_ranks = {}, {}
    for name, (image, text, _) in models.items():
        ranking = (text[query] @ image.T).argsort(descending=True)
        rankings[name] = ranking[:10].tolist()
        true_ranks[name] = int((ranking == query).nonzero()[0, 0]) + 1
    images = eval_dataset.select_columns([image_column])
    pool = {index: images[index][image_column] for index in {query, *(i for ranking in rankings.values() for i in ranking)}}
    grid_path = plot_retrieval_grid(
        eval_dataset[query][text_column], pool, rankings, query, true_ranks, out_dir / "retrieval_grid.png"
    )
    return {"similarity_by_hop": hop_path, "retrieval_grid": grid_path}


__all__ = ["plot_retrieval_grid", "plot_similarity_by_hop", "similarity_by_hop", "write_figures"]
