"""Shared test helper: move every weight off its init."""
import torch


def perturb(method: torch.nn.Module, seed: int = 0) -> None:
    """Add N(0, 0.02) noise to every parameter: zero-initialised layers (e.g. the last kpt_branch
    Linear, which makes outputs equal the proposals) would otherwise hide parts of the forward pass."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(0.02 * torch.randn(parameter.shape, generator=generator))
