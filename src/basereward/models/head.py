"""The reward head: an MLP on one hidden state (pure torch)."""

from __future__ import annotations

import torch
from torch import nn

_ACTIVATIONS = {"none": nn.Identity, "tanh": nn.Tanh, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}


class RewardHead(nn.Module):
    """`num_layers` linear layers with `activation` between them, ending in one scalar.

    num_layers=1 is a linear head; the paper's default is 2 layers, SiLU, width = backbone hidden
    size. With `zero_init_last` the last layer starts at zero, so every reward is 0 at step 0.
    """

    def __init__(
        self,
        in_features: int,
        num_layers: int = 2,
        activation: str = "silu",
        hidden_size: int = 0,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if not 1 <= num_layers <= 5:
            raise ValueError(f"num_layers must be in 1..5, got {num_layers}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        width = hidden_size or in_features
        layers: list[nn.Module] = []
        dim = in_features
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, width), _ACTIVATIONS[activation]()]
            dim = width
        last = nn.Linear(dim, 1)
        if zero_init_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, H) -> (B,) rewards, computed in the head's dtype, also under autocast (a bf16
        reward has ~3 significant digits: too coarse for the small chosen-rejected gaps)."""
        w = self.net[-1].weight
        with torch.autocast(pooled.device.type, enabled=False):
            return self.net(pooled.to(w.dtype)).squeeze(-1)
