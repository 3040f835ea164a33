"""Self-supervised pretraining on unlabelled volumes (restoration + rotation, as Models Genesis / Swin UNETR).

A segmentation network learns to *restore* a corrupted patch (masked cubes filled
with noise — inpainting —, a random monotone intensity curve and locally shuffled
voxels) while a small head on its deepest encoder features predicts which of four
in-plane rotations was applied. Only the network's own tensors are saved, so the
result loads with ``model.pretrained.source: <file>.safetensors``; the encoder loads
in full and only the output layer (another channel count) stays initialised.

The sampling of corruption parameters is separate from applying them (a
``torch.Generator`` drives everything), so a pretraining run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from medimg.models.networks import build_network, encoder_prefixes


@dataclass(frozen=True)
class Corruption:
    """Sampled corruption of one batch (cube boxes, intensity curve exponents, rotations)."""

    boxes: list[list[tuple[slice, ...]]]
    gammas: torch.Tensor
    rotations: torch.Tensor
    shuffle_seed: int


def sample_corruption(
    shape: tuple[int, ...], generator: torch.Generator, *, mask_ratio: float = 0.25, cube: int = 8
) -> Corruption:
    """Draw the random parameters that :func:`apply_corruption` will use for a batch of ``shape``.

    Example:
        >>> c = sample_corruption((2, 1, 16, 16, 16), torch.Generator().manual_seed(0))
        >>> len(c.boxes), c.rotations.shape
        (2, torch.Size([2]))
    """
    batch, spatial = shape[0], shape[2:]
    n_cubes = max(1, round(mask_ratio * float(torch.tensor(spatial).prod()) / cube ** len(spatial)))
    boxes = []
    for _ in range(batch):
        sample = []
        for _ in range(n_cubes):
            start = [int(torch.randint(0, max(1, s - cube + 1), (1,), generator=generator)) for s in spatial]
            sample.append(tuple(slice(a, a + cube) for a in start))
        boxes.append(sample)
    gammas = torch.exp(torch.empty(batch).uniform_(-0.7, 0.7, generator=generator))
    rotations = torch.randint(0, 4, (batch,), generator=generator)
    return Corruption(boxes, gammas, rotations, int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))


def rotate(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate each sample by ``k[i] * 90`` degrees in its last two axes.

    Example:
        >>> rotate(torch.arange(4.).reshape(1, 1, 2, 2), torch.tensor([1]))[0, 0].tolist()
        [[1.0, 3.0], [0.0, 2.0]]
    """
    return torch.stack([torch.rot90(sample, int(r), dims=(-2, -1)) for sample, r in zip(x, k, strict=True)])


def apply_corruption(x: torch.Tensor, c: Corruption) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(corrupted input, restoration target)`` (both rotated by ``c.rotations``).

    Example:
        >>> x = torch.rand(2, 1, 16, 16, 16)
        >>> c = sample_corruption(x.shape, torch.Generator().manual_seed(1))
        >>> corrupted, target = apply_corruption(x, c)
        >>> corrupted.shape == target.shape == x.shape
        True
    """
    target = rotate(x, c.rotations)
    lo = target.flatten(1).min(1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = target.flatten(1).max(1).values.view(-1, *([1] * (x.dim() - 1)))
    unit = (target - lo) / (hi - lo).clamp_min(1e-6)
    curved = unit ** c.gammas.view(-1, *([1] * (x.dim() - 1))).to(x)
    out = curved * (hi - lo) + lo
    shuffler = torch.Generator().manual_seed(c.shuffle_seed)
    for i, sample_boxes in enumerate(c.boxes):
        for j, box in enumerate(sample_boxes):
            region = out[(i, slice(None), *box)]
            if j % 2:  # local shuffle: voxels of the cube permuted
                flat = region.reshape(region.shape[0], -1)
                perm = torch.randperm(flat.shape[1], generator=shuffler)
                out[(i, slice(None), *box)] = flat[:, perm].reshape(region.shape)
            else:  # inpainting: cube replaced by noise at the sample's mean level
                noise = (
                    torch.randn(region.shape, generator=shuffler).to(x) * target[i].std() + target[i].mean()
                )
                out[(i, slice(None), *box)] = noise
    return out, target


class SSLModel(nn.Module):
    """A network plus a rotation head fed by its deepest encoder module (captured by a forward hook).

    Example:
        >>> net = build_network("unet", in_channels=1, out_channels=1, channels=[4, 8], strides=[2])
        >>> ssl = SSLModel(net, encoder_prefixes("unet", net)[-1])
        >>> restored, logits = ssl(torch.rand(2, 1, 16, 16, 16))
        >>> restored.shape, logits.shape
        (torch.Size([2, 1, 16, 16, 16]), torch.Size([2, 4]))
    """

    def __init__(self, network: nn.Module, deepest: str) -> None:
        super().__init__()
        self.network = network
        self.rotation_head = nn.LazyLinear(4)
        self._features: torch.Tensor | None = None
        module = network.get_submodule(deepest.rstrip("."))
        module.register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: object, output: object) -> None:
        while isinstance(output, (list, tuple)):
            output = output[-1]
        self._features = output

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        restored = self.network(x)
        assert self._features is not None
        pooled = self._features.flatten(2).mean(-1)
        return restored, self.rotation_head(pooled)


def pretrain_network(
    network_name: str,
    patches: Callable[[torch.Generator], torch.Tensor] | Iterator[torch.Tensor],
    *,
    steps: int,
    spatial_dims: int = 3,
    in_channels: int = 1,
    lr: float = 1e-3,
    rotation_weight: float = 0.1,
    seed: int = 0,
    network_params: dict | None = None,
    log: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Pretrain ``network_name`` self-supervised and return its state dict (no SSL head).

    Args:
        network_name: A segmentation network of :mod:`medimg.models.networks`.
        patches: ``patches(generator) -> [B, C, *spatial]`` sampler, or an iterator of batches.
        steps: Optimizer steps.
        spatial_dims: 2 or 3.
        in_channels: Image channels (the restoration target has as many).
        lr: AdamW learning rate.
        rotation_weight: Weight of the rotation cross-entropy next to the L1 restoration loss.
        seed: Seeds the weights and every random corruption.
        network_params: Parameters of the network (as in ``model.params``).
        log: Called as ``log(step, {"loss": …, "restore": …, "rotation": …})`` every step.

    Returns:
        The network's state dict (CPU tensors) ready for ``safetensors.torch.save_file``.

    Example:
        >>> sampler = lambda g: torch.rand(2, 1, 16, 16, 16, generator=g)
        >>> state = pretrain_network("unet", sampler, steps=1, network_params={"channels": [4, 8], "strides": [2]})
        >>> "model.0.conv.unit0.conv.weight" in state
        True
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    network, model = _ssl_model(network_name, spatial_dims, in_channels, network_params)
    first = patches(generator) if callable(patches) else next(patches)
    model(first[:1])  # materialise the lazy rotation head
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    batch = first
    for step in range(steps):
        if step:
            batch = patches(generator) if callable(patches) else next(patches)
        losses = _ssl_step(model, optimizer, batch, generator, rotation_weight)
        if log is not None:
            log(step, {k: float(v.detach()) for k, v in losses.items()})
    return {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}


def _ssl_model(
    network_name: str, spatial_dims: int, in_channels: int, network_params: dict | None
) -> tuple[nn.Module, SSLModel]:
    """The network (restoring as many channels as it reads) and its SSL wrapper on the deepest encoder stage."""
    network = build_network(
        network_name,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=in_channels,
        **(network_params or {}),
    )
    return network, SSLModel(network, encoder_prefixes(network_name, network)[-1])


def _ssl_step(
    model: SSLModel,
    optimizer: torch.optim.Optimizer,
    batch: torch.Tensor,
    generator: torch.Generator,
    rotation_weight: float,
) -> dict[str, torch.Tensor]:
    """One optimizer step on a freshly corrupted batch: L1 restoration plus weighted rotation loss."""
    corruption = sample_corruption(tuple(batch.shape), generator)
    corrupted, target = apply_corruption(batch, corruption)
    restored, logits = model(corrupted)
    restore_loss = nn.functional.l1_loss(restored, target)
    rotation_loss = nn.functional.cross_entropy(logits, corruption.rotations)
    loss = restore_loss + rotation_weight * rotation_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss, "restore": restore_loss, "rotation": rotation_loss}
