"""Patching frames into channels, in the layout of the reference implementation (PredRNN's reshape_patch).

``(B, T, C, H, W)`` -> ``(B, T, p*p*C, H/p, W/p)`` where the channel ``(py*p + px)*C + c`` holds pixel
``(y*p + py, x*p + px)`` of channel ``c``. (This is not ``pixel_unshuffle``'s order, which is ``c*p*p + py*p + px``.)
"""

from __future__ import annotations

from torch import Tensor


def to_patches(frames: Tensor, p: int) -> Tensor:
    b, t, c, h, w = frames.shape
    x = frames.reshape(b, t, c, h // p, p, w // p, p)
    return x.permute(0, 1, 4, 6, 2, 3, 5).reshape(b, t, p * p * c, h // p, w // p)


def from_patches(patches: Tensor, p: int) -> Tensor:
    b, t, pc, hp, wp = patches.shape
    c = pc // (p * p)
    x = patches.reshape(b, t, p, p, c, hp, wp)
    return x.permute(0, 1, 4, 5, 2, 6, 3).reshape(b, t, c, hp * p, wp * p)
