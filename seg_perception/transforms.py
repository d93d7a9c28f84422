"""Joint image/label augmentation (torchvision transforms v2) and normalisation.

Geometric transforms move image and mask together; photometric ones touch the
image only; padding of the mask uses the ignore id so it never counts.
"""
from __future__ import annotations

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class RandomScale(v2.Transform):
    """Resize image and mask by one random factor (bilinear image, nearest mask)."""

    def __init__(self, scale: tuple[float, float]):
        super().__init__()
        self.scale = scale

    def make_params(self, flat_inputs):
        h, w = v2.query_size(flat_inputs)
        s = float(torch.empty(1).uniform_(*self.scale))
        return {"size": [max(1, round(h * s)), max(1, round(w * s))]}

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.Mask):
            return v2.functional.resize(inpt, params["size"], interpolation=v2.InterpolationMode.NEAREST)
        return v2.functional.resize(inpt, params["size"], antialias=True)


def train_transform(*, crop: tuple[int, int], scale: tuple[float, float] = (0.75, 1.5),
                    hflip: float = 0.5, jitter: float = 0.2, ignore_index: int = 255) -> v2.Compose:
    """crop is (width, height) like every size in this package."""
    w, h = crop
    steps = [RandomScale(scale),
             v2.RandomCrop((h, w), pad_if_needed=True,
                           fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
             v2.RandomHorizontalFlip(hflip)]
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.05, jitter / 4)))
    return v2.Compose(steps)


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
    """HxWx3 uint8 + HxW uint8 numpy to tv_tensors without copying pixels twice."""
    img = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1))
    mask = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(label)))
    return img, mask


def normalise(batch_uint8: torch.Tensor, mean, std) -> torch.Tensor:
    """NCHW uint8 (or float 0..255) to the float input the models were trained on."""
    x = batch_uint8.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s
