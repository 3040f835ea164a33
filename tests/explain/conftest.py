"""Shared fixtures for the explain tests: a tiny 3D classifier trained on a synthetic cube task.

Class 1 = a bright 5^3 cube at a random location inside a noisy 24^3 volume; class 0 = noise
only. The network is trained in a few seconds on one CPU thread.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

SIZE = 24
CUBE = 5


class TinyClassifier(nn.Module):
    """Three 3x3x3 convolutions, one pooling, global average pooling, a linear head."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(1, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(8, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(2),
            nn.Conv3d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax(dim=(2, 3, 4)))


def make_case(rng: np.random.Generator, positive: bool) -> tuple[np.ndarray, np.ndarray]:
    """One volume ``(SIZE,)*3`` and the boolean mask of its cube (empty for negatives)."""
    img = rng.normal(0.0, 0.3, (SIZE, SIZE, SIZE)).astype(np.float32)
    # a smooth, asymmetric background ramp so the task is not trivially "mean intensity"
    ramp = np.linspace(-0.5, 0.5, SIZE, dtype=np.float32)
    img += rng.uniform(-1, 1) * ramp[:, None, None]
    mask = np.zeros(img.shape, bool)
    if positive:
        lo = rng.integers(2, SIZE - CUBE - 2, size=3)
        sl = tuple(slice(int(a), int(a) + CUBE) for a in lo)
        mask[sl] = True
        img[sl] += 1.5
    return img, mask


def make_dataset(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    pairs = [make_case(rng, bool(y)) for y in labels]
    x = torch.as_tensor(np.stack([p[0] for p in pairs]))[:, None]
    return x, torch.as_tensor(labels), np.stack([p[1] for p in pairs])


@pytest.fixture(scope="session")
def trained_classifier() -> TinyClassifier:
    """The tiny classifier, trained to > 95% training accuracy (asserted)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y, _ = make_dataset(64, seed=1)
    model = TinyClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _epoch in range(3):
        for idx in torch.randperm(len(x), generator=gen).split(16):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.95, f"tiny classifier did not learn the cube task (train accuracy {acc:.2f})"
    return model


@pytest.fixture(scope="session")
def test_cases() -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Held-out cases: ``(x (N,1,24,24,24), labels (N,), cube masks (N,24,24,24))``."""
    return make_dataset(20, seed=99)
