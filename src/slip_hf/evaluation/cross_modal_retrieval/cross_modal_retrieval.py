"""`evaluate` module for the cross-modal retrieval metrics of SLIP's Table 2 (chunked; see
`slip_hf.evaluation.retrieval`).

    import evaluate
    from slip_hf.evaluation import retrieval_metric_path
    metric = evaluate.load(retrieval_metric_path())
    metric.compute(image_embeds=image_embeds, text_embeds=text_embeds)   # row i of each is pair i
"""

import datasets
import evaluate

from slip_hf.evaluation.retrieval import retrieval_metrics

_DESCRIPTION = """Image-to-text and text-to-image retrieval over a pool of N image-text pairs (the pair itself is
the one relevant candidate): MRR per direction and mean, median and mean rank, Recall@1/5/10. Computed in
chunks, so memory is O(chunk x N)."""

_KWARGS_DESCRIPTION = """
Args:
    image_embeds: N vectors (l2-normalised for cosine ranking).
    text_embeds: N vectors; text i pairs with image i.
    chunk_size: image rows per similarity block (default 2048).
    ties: "pessimistic" (default), "optimistic" or "average".
Returns:
    mrr, mrr_i2t, mrr_t2i, median_rank, mean_rank, recall_at_{1,5,10} (and per direction).
"""

_CITATION = """@misc{lu2025slip, title={SLIP: Structural-aware Language-Image Pretraining for Vision-Language Alignment},
author={Lu, Wenbo}, year={2025}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class CrossModalRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "image_embeds": datasets.Sequence(datasets.Value("float32")),
                    "text_embeds": datasets.Sequence(datasets.Value("float32")),
                }
            ),
        )

    def _compute(self, image_embeds, text_embeds, chunk_size=2048, ties="pessimistic"):
        return retrieval_metrics(image_embeds, text_embeds, chunk_size=chunk_size, ties=ties)
