"""A configurable 2D U-Net: the one network behind every smartscope model.

``UNet(UNetConfig(...))`` maps ``(B, in_channels, Y, X)`` float32 tensors to
``(B, out_channels, Y, X)``. Y and X must be multiples of
``UNetConfig.size_multiple``. With ``residual=True`` (restoration) the network
predicts a correction that is added to the input, so an untrained network is
the identity. ``pixel_unshuffle=2`` folds each 2x2 block of pixels into
channels before the first convolution and unfolds them at the end (as FFDNet
does), which cuts the compute four-fold at full output resolution.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

__all__ = ["UNet", "UNetConfig"]


class UNetConfig(BaseModel):
    """Architecture of a :class:`UNet`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    in_channels: int = Field(1, ge=1, le=16)
    out_channels: int = Field(1, ge=1, le=16)
    depth: int = Field(3, ge=1, le=5, description="number of 2x down-samplings")
    base_channels: int = Field(
        16, ge=4, le=128, description="channels at full resolution"
    )
    residual: bool = Field(
        False, description="add the input to the output (restoration)"
    )
    pixel_unshuffle: Literal[1, 2] = Field(
        1, description="fold 2x2 pixels into channels"
    )
    norm: Literal["none", "batch", "group"] = "batch"
    blind_residual: bool = Field(
        False,
        description=(
            "add a smoothing of each pixel's neighbours, without the pixel itself, "
            "to output channel 0 (Noise2Void: the network learns only corrections "
            "and cannot see the pixel through this path)"
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> UNetConfig:
        if self.residual and self.in_channels != self.out_channels:
            raise ValueError(
                "residual=True needs in_channels == out_channels, got "
                f"{self.in_channels} and {self.out_channels}"
            )
        if self.residual and self.blind_residual:
            raise ValueError("residual and blind_residual cannot both be set")
        return self

    @property
    def size_multiple(self) -> int:
        """Input Y and X must be multiples of this."""
        return self.pixel_unshuffle * 2**self.depth


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        return nn.GroupNorm(min(8, ch // 2), ch)
    return nn.Identity()


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none"),
            _norm(norm, cout),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """2D U-Net with max-pool down-sampling and bilinear up-sampling.

    Parameters
    ----------
    config : UNetConfig
        Architecture.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        c, f = config, config.pixel_unshuffle
        chans = [c.base_channels * 2**i for i in range(c.depth + 1)]
        self.unshuffle = nn.PixelUnshuffle(f) if f > 1 else nn.Identity()
        self.shuffle = nn.PixelShuffle(f) if f > 1 else nn.Identity()
        self.down = nn.ModuleList()
        cin = c.in_channels * f * f
        for ch in chans:
            self.down.append(_ConvBlock(cin, ch, c.norm))
            cin = ch
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.reduce = nn.ModuleList()
        for ch in reversed(chans[:-1]):
            self.reduce.append(nn.Conv2d(cin, ch, 1))
            self.up.append(_ConvBlock(2 * ch, ch, c.norm))
            cin = ch
        self.head = nn.Conv2d(cin, c.out_channels * f * f, 1)
        self.residual = c.residual
        if c.residual:
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)
        self.blind_residual = c.blind_residual
        # Gaussian weights (sigma 1.5 px) over a 7 x 7 window with the centre
        # left out: the blind-spot baseline (fixed, not in the state dict)
        r = torch.arange(-3, 4, dtype=torch.float32)
        ring = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5**2))
        ring[3, 3] = 0.0
        self.register_buffer("ring", (ring / ring.sum())[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, in_channels, Y, X) float32 → (B, out_channels, Y, X)."""
        h = self.unshuffle(x)
        skips: list[torch.Tensor] = []
        for i, block in enumerate(self.down):
            if i > 0:
                h = self.pool(h)
            h = block(h)
            skips.append(h)
        skips.pop()
        for reduce, block in zip(self.reduce, self.up, strict=False):
            skip = skips.pop()
            h = nn.functional.interpolate(
                reduce(h), size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
            h = block(torch.cat([h, skip], dim=1))
        out = self.shuffle(self.head(h))
        if self.residual:
            out = out + x
        if self.blind_residual:
            base = nn.functional.conv2d(
                nn.functional.pad(x[:, :1], (3, 3, 3, 3), mode="reflect"), self.ring
            )
            out = torch.cat([out[:, :1] + base, out[:, 1:]], dim=1)
        return out

    def n_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def freeze_norm_statistics(network: nn.Module) -> None:
    """Put ``network``'s batch norms in eval mode (call after ``.train()``).

    Their running statistics stay as loaded while the weights (and the norms'
    affine parameters) learn. For fine-tuning from loaded weights on a few
    images: updated from the new patches, the statistics moved faster than the
    weights could follow (docs/models.md, "Noise2Void that adapts during a
    run" and "Noise2Void on your own images").
    """
    for m in network.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
