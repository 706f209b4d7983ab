"""Network architectures, kept in a small registry by name.

Every architecture exposes its convolutional stack as a plain ``nn.Sequential``
called ``features`` (like torchvision's AlexNet and VGG) so the deconvnet can be
derived from the layer sequence, and its classifier head as ``classifier``.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
from torch import nn

__all__ = ["CifarCNN", "ARCHITECTURES", "build_model", "full_config", "register_architecture"]


class CifarCNN(nn.Module):
    """The source material's CIFAR-10 network.

    conv 3->32 (5x5, pad 2) -> ReLU -> 2x2 max pool -> conv 32->64 (5x5, pad 2)
    -> ReLU -> 2x2 max pool -> fully connected (``hidden`` units, ReLU, dropout)
    -> linear read-out whose softmax gives the class probabilities.

    ``forward`` takes normalised images ``(B, 3, 32, 32)`` and returns logits
    ``(B, num_classes)``; apply ``softmax`` for probabilities.
    """

    def __init__(
        self,
        num_classes: int = 10,
        hidden: int = 128,
        dropout: float = 0.3,
        channels: tuple = (32, 64),
        input_size: int = 32,
    ):
        super().__init__()
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, c1, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = input_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * side * side, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


ARCHITECTURES: Dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory(**config)`` available to every command as ``name``."""
    ARCHITECTURES[name] = factory


register_architecture("cifar_cnn", CifarCNN)


def full_config(arch: str, **config) -> dict:
    """``config`` completed with the factory's defaults, so a checkpoint records every
    setting and still loads if a default changes later."""
    import inspect

    params = inspect.signature(ARCHITECTURES[arch]).parameters
    full = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    full.update(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}


def build_model(arch: str, **config) -> nn.Module:
    """Build a registered architecture with its configuration."""
    if arch not in ARCHITECTURES:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {arch!r} (known: {known})")
    return ARCHITECTURES[arch](**config)
