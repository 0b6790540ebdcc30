"""Training-time augmentation of whole batches on their device: random crops and mirror images.

Standard CIFAR practice (4 px zero padding, a random 32x32 window, a coin flip for the mirror)
without a data-loader pipeline: the draws come from the epoch's generator, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

AUGMENTATIONS = ("crop", "flip")


def augment_batch(
    x: torch.Tensor, kinds: Sequence[str], generator: torch.Generator, padding: int = 4
) -> torch.Tensor:
    """Images (N, C, H, W) mirrored left-right with probability 1/2 and/or randomly shifted by up
    to `padding` pixels (the window of a zero-padded copy), independently per image."""
    n, _, h, w = x.shape
    if n == 0:
        return x
    if "flip" in kinds:
        mirror = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
        x = torch.where(mirror, x.flip(-1), x)
    if "crop" in kinds:
        span = 2 * padding + 1
        top = torch.randint(0, span, (n, 1), generator=generator).to(x.device)
        left = torch.randint(0, span, (n, 1), generator=generator).to(x.device)
        rows = top + torch.arange(h, device=x.device)  # (n, h)
        cols = left + torch.arange(w, device=x.device)  # (n, w)
        padded = F.pad(x, (padding,) * 4).permute(0, 2, 3, 1)  # (n, H + 2p, W + 2p, c)
        batch = torch.arange(n, device=x.device).view(n, 1, 1)
        x = padded[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()
    return x
