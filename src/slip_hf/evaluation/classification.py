"""Category classification from embeddings: zero-shot (prompted class names) and k-shot linear probes.

Zero-shot: each class name is put into prompt templates ("a photo of a {}."), the prompts' text embeddings
are averaged per class and l2-normalised, and an image gets the class of highest cosine similarity (the CLIP
paper's recipe). Few-shot: a logistic-regression probe (scikit-learn, L-BFGS, as in the CLIP paper) on the
image embeddings of k training nodes per class, scored on the evaluation nodes, averaged over several draws
of the k shots.
"""

import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

DEFAULT_TEMPLATES = ("a photo of a {}.", "a product photo of a {}.", "{}")


def _scores(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    accuracy = float((predictions == labels).mean())
    recalls = [float((predictions[labels == c] == c).mean()) for c in range(num_classes) if (labels == c).any()]
    return {"accuracy": accuracy, "balanced_accuracy": float(np.mean(recalls))}


def zero_shot_classification(
    image_embeds: torch.Tensor,
    labels: Sequence[int],
    class_names: Sequence[str],
    encode_texts: Callable[[list[str]], torch.Tensor],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
) -> dict[str, float]:
    """Zero-shot accuracy of images against prompted class names.

    Args:
        image_embeds (`torch.Tensor` of shape `(N, d)`): l2-normalised image embeddings.
        labels: the true class of each image.
        class_names: names of classes `0..C-1`.
        encode_texts: maps a list of strings to l2-normalised `(len, d)` text embeddings.
        templates: prompt templates with one `{}` for the class name.

    Returns:
        `accuracy`, `balanced_accuracy` (mean per-class recall) and, with more than 5 classes, `top5_accuracy`.
    """
    prompts = [template.format(name) for name in class_names for template in templates]
    text = encode_texts(prompts).float().reshape(len(class_names), len(templates), -1).mean(1)
    text = torch.nn.functional.normalize(text, dim=-1)
    logits = image_embeds.float() @ text.T
    labels = np.asarray(labels)
    scores = _scores(logits.argmax(-1).numpy(), labels, len(class_names))
    if len(class_names) > 5:
        top5 = logits.topk(5, dim=-1).indices.numpy()
        scores["top5_accuracy"] = float((top5 == labels[:, None]).any(1).mean())
    return scores


def few_shot_linear_probe(
    train_embeds: torch.Tensor,
    train_labels: Sequence[int],
    eval_embeds: torch.Tensor,
    eval_labels: Sequence[int],
    shots: Sequence[int] = (1, 5, 10),
    num_draws: int = 3,
    regularization: float = 1.0,
    seed: int = 0,
) -> dict[str, float]:
    """k-shot logistic-regression probes on image embeddings.

    For every k in `shots`, `num_draws` times: k training nodes per class are drawn (all of a class's nodes
    when it has fewer), a probe is fit and scored on the evaluation nodes.

    Returns:
        `{"{k}shot_accuracy": mean, "{k}shot_accuracy_std": std, "{k}shot_balanced_accuracy": mean}` per k.
    """
    train_x, eval_x = np.asarray(train_embeds, dtype=np.float64), np.asarray(eval_embeds, dtype=np.float64)
    train_y, eval_y = np.asarray(train_labels), np.asarray(eval_labels)
    classes = np.unique(train_y)
    rng = np.random.default_rng(seed)
    results: dict[str, float] = {}
    for k in shots:
        accuracies, balanced = [], []
        for _ in range(num_draws):
            chosen = np.concatenate(
                [rng.choice(np.flatnonzero(train_y == c), size=min(k, int((train_y == c).sum())), replace=False) for c in classes]
            )
            if np.unique(train_y[chosen]).size < 2:
                raise ValueError("a linear probe needs training nodes of at least two classes.")
            probe = LogisticRegression(C=regularization, max_iter=1000)
            with warnings.catch_warnings():
                # k-shot draws have at most k samples per class by design, which scikit-learn flags (with > 20
                # samples) as "The number of unique classes is greater than 50% ... a regression problem".
                warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%", category=UserWarning)
                probe.fit(train_x[chosen], train_y[chosen])
            scores = _scores(probe.predict(eval_x), eval_y, int(max(classes.max(), eval_y.max())) + 1)
            accuracies.append(scores["accuracy"])
            balanced.append(scores["balanced_accuracy"])
        results[f"{k}shot_accuracy"] = float(np.mean(accuracies))
        results[f"{k}shot_accuracy_std"] = float(np.std(accuracies))
        results[f"{k}shot_balanced_accuracy"] = float(np.mean(balanced))
    return results


__all__ = ["DEFAULT_TEMPLATES", "few_shot_linear_probe", "zero_shot_classification"]
