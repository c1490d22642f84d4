"""Comparing two different computations of the same quantity in float32.

Bit equality holds for the *same* computation run twice (resume, determinism, export, remote code). Two computations
that are equal in exact arithmetic but reduce in another order (another library's code path, another memory layout,
another CPU's vector width) agree only up to rounding. A sum of n float32 terms, reordered, moves by at most
(n - 1) · eps · Σ|terms| (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2), so the tolerance here is
stated in units in the last place (eps = 2⁻²³) of the tensor's largest magnitude.
"""

import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps


def assert_equal_up_to_float_order(actual: torch.Tensor, expected: torch.Tensor, ulps: int, name: str = "") -> None:
    """Assert `|actual - expected| <= ulps · eps · max|expected|` elementwise, naming the worst miss in ulps."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = expected.detach().abs().max().clamp_min(torch.finfo(torch.float32).tiny).item()
    miss = (actual.detach() - expected.detach()).abs().max().item() / (FLOAT32_EPS * scale)
    assert miss <= ulps, f"{name}: differs by {miss:.1f} ulps of its largest value (tolerance {ulps})"
