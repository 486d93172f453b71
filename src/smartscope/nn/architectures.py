"""The networks a smartscope bioimage.io package names, built from plain keyword arguments.

bioimage.io tools rebuild a ``pytorch_state_dict`` model by calling the
card's ``architecture`` (``import_from`` + ``callable``) with its ``kwargs``,
so the classes here take the :class:`~smartscope.nn.unet.UNetConfig` fields
as keywords. Both subclass :class:`~smartscope.nn.unet.UNet`, so they load
the very ``weights.pt`` (same state-dict keys) that smartscope itself loads.

- :class:`SegmentationUNet`: ``(B, 1, Y, X)`` normalised image → ``(B, 2, Y, X)``
  foreground and distance logits (the card declares ``scale_range``
  preprocessing and ``sigmoid`` postprocessing around it).
- :class:`DenoisingUNet`: ``(B, C, Y, X)`` image in any intensity units →
  restored image in the same units. It normalises each image by its own
  percentiles and de-normalises the result, exactly as
  :meth:`smartscope.nn.model.DenoiseModel.predict` does (without tiling or
  test-time augmentation), so a bioimage.io consumer gets intensities back.
"""

from __future__ import annotations

import warnings

import torch

from smartscope.nn.unet import UNet, UNetConfig

__all__ = ["DenoisingUNet", "SegmentationUNet", "percentile_range"]


def _percentile_range(
    x: torch.Tensor, p_low: float, p_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` percentiles of each image of ``x``.

    Parameters
    ----------
    x : (B, C, Y, X) float32 Tensor
    p_low, p_high : percentiles, 0-100

    Returns
    -------
    low, high : (B, C, 1, 1) float32 Tensors, ``high > low`` guaranteed
        (as :func:`smartscope.nn.normalize.percentile_range`, with the same
        strided sample on large images)
    """
    flat = x.flatten(2)
    n = flat.shape[-1]
    # at most about 2**18 pixels, sampled with a stride, as
    # smartscope.nn.normalize.percentile_range does
    if n > 262144:
        flat = flat[:, :, :: n // 262144]
    q = torch.tensor([p_low / 100.0, p_high / 100.0], dtype=flat.dtype, device=x.device)
    lh = torch.quantile(flat, q, dim=-1)
    low = lh[0]
    high = lh[1]
    high = torch.maximum(high, low + torch.clamp(low.abs() * 1e-6, min=1e-6))
    return low[:, :, None, None], high[:, :, None, None]


# scripted, so that a traced DenoisingUNet keeps the size-dependent sampling
# (torch flags TorchScript deprecated; bioimage.io consumers still read it)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    percentile_range = torch.jit.script(_percentile_range)


def _config(**kwargs: object) -> UNetConfig:
    return UNetConfig.model_validate(kwargs)


class SegmentationUNet(UNet):
    """The segmentation U-Net from keyword arguments.

    ``forward``: ``(B, in_channels, Y, X)`` float32 normalised image →
    ``(B, out_channels, Y, X)`` float32 logits (foreground, distance).
    Y and X must be multiples of ``pixel_unshuffle * 2**depth``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 2,
        depth: int = 3,
        base_channels: int = 16,
        residual: bool = False,
        pixel_unshuffle: int = 1,
        norm: str = "batch",
        blind_residual: bool = False,
    ) -> None:
        super().__init__(
            _config(
                in_channels=in_channels,
                out_channels=out_channels,
                depth=depth,
                base_channels=base_channels,
                residual=residual,
                pixel_unshuffle=pixel_unshuffle,
                norm=norm,
                blind_residual=blind_residual,
            )
        )


class DenoisingUNet(UNet):
    """A restoration U-Net that takes and returns intensities.

    ``forward``: ``(B, C, Y, X)`` float32 image in any units (e.g. camera ADU)
    → ``(B, C, Y, X)`` float32 restored image in the same units. Each image
    is mapped to ``(x - P[p_low]) / (P[p_high] - P[p_low])`` before the U-Net
    and back after it. ``forward_normalized`` is the bare U-Net.
    Y and X must be multiples of ``pixel_unshuffle * 2**depth``.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 3,
        base_channels: int = 16,
        residual: bool = False,
        pixel_unshuffle: int = 1,
        norm: str = "batch",
        blind_residual: bool = False,
        p_low: float = 1.0,
        p_high: float = 99.8,
    ) -> None:
        super().__init__(
            _config(
                in_channels=in_channels,
                out_channels=out_channels,
                depth=depth,
                base_channels=base_channels,
                residual=residual,
                pixel_unshuffle=pixel_unshuffle,
                norm=norm,
                blind_residual=blind_residual,
            )
        )
        if in_channels != out_channels:
            raise ValueError(
                "a DenoisingUNet maps each channel to itself: in_channels must "
                f"equal out_channels, got {in_channels} and {out_channels}"
            )
        if not 0 <= p_low < p_high <= 100:
            raise ValueError(f"need 0 <= p_low < p_high <= 100, got {p_low}, {p_high}")
        self.p_low = float(p_low)
        self.p_high = float(p_high)

    def forward_normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, Y, X) normalised image → normalised restoration."""
        return super().forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, Y, X) float32 image → restored image in its units."""
        low, high = percentile_range(x, self.p_low, self.p_high)
        scale = high - low
        return super().forward((x - low) / scale) * scale + low
