# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
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


class RandomNoise(v2.Transform):
    """Add Gaussian noise of a random strength (0..max_std of 255) to the image; masks pass unchanged."""

    def __init__(self, max_std: float):
        super().__init__()
        self.max_std = max_std

    def make_params(self, flat_inputs):
        return {"std": 255.0 * self.max_std * float(torch.rand(()))}

    def transform(self, inpt, params):
        if not isinstance(inpt, tv_tensors.Image):
            return inpt
        noisy = inpt.float() + torch.randn(inpt.shape) * params["std"]
        return tv_tensors.wrap(noisy.clamp_(0, 255).to(inpt.dtype), like=inpt)


BLUR_SIGMA = (0.3, 1.5)


def train_transform(*, crop: tuple[int, int], scale: tuple[float, float] = (0.75, 1.5),
                    hflip: float = 0.5, jitter: float = 0.2, blur: float = 0.0, noise: float = 0.0,
                    ignore_index: int = 255) -> v2.Compose:
    """Crop is (width, height) like every size in this package."""
    w, h = crop
    steps = [RandomScale(scale),
             v2.RandomCrop((h, w), pad_if_needed=True,
                           fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
             v2.RandomHorizontalFlip(hflip)]
    if jitter > 0:
        steps.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=min(0.05, jitter / 4)))
    if blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(5, sigma=BLUR_SIGMA)], p=blur))
    if noise > 0:
        steps.append(RandomNoise(noise))
    return v2.Compose(steps)


class BatchAugment:
    """The same augmentation as train_transform, applied to whole batches on the training device.

    On a GPU, per-frame augmentation in CPU workers cannot feed the network;
    here the frames stay on the device as uint8 and one affine resampling per
    batch does scale, crop and flip (bilinear image, nearest mask, the ignore id
    outside the frame). Photometric changes: brightness, contrast, saturation
    (no hue shift), blur and noise.
    """

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], *, crop: tuple[int, int],
                 scale: tuple[float, float] = (0.75, 1.5), hflip: float = 0.5, jitter: float = 0.2,
                 blur: float = 0.0, noise: float = 0.0, ignore_index: int = 255, device="cpu"):
        self.crop, self.scale, self.hflip, self.jitter = crop, scale, hflip, jitter
        self.blur, self.noise, self.ignore_index, self.device = blur, noise, ignore_index, torch.device(device)
        # Frames of one size are stacked into one tensor; `where` finds a frame's stack and row.
        shapes = sorted({img.shape for img in images})
        self.stacks, self.where = [], [None] * len(images)
        for k, shape in enumerate(shapes):
            rows = [i for i, img in enumerate(images) if img.shape == shape]
            for r, i in enumerate(rows):
                self.where[i] = (k, r)
            self.stacks.append((
                torch.from_numpy(np.stack([images[i] for i in rows])).permute(0, 3, 1, 2).contiguous().to(self.device),
                torch.from_numpy(np.stack([labels[i] for i in rows])).to(self.device)))

    def _theta(self, n: int, h: int, w: int, g: torch.Generator) -> torch.Tensor:
        """Affine maps from crop to frame coordinates (normalised, align_corners=False)."""
        cw, ch = self.crop
        s = torch.empty(n).uniform_(*self.scale, generator=g)
        rw, rh = cw / s, ch / s  # the frame region one crop covers, in frame pixels
        x0 = torch.minimum(w - rw, torch.zeros(n)) + torch.rand(n, generator=g) * (w - rw).abs()
        y0 = torch.minimum(h - rh, torch.zeros(n)) + torch.rand(n, generator=g) * (h - rh).abs()
        flip = torch.where(torch.rand(n, generator=g) < self.hflip, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0], theta[:, 0, 2] = flip * rw / w, (2 * x0 + rw) / w - 1
        theta[:, 1, 1], theta[:, 1, 2] = rh / h, (2 * y0 + rh) / h - 1
        return theta

    def _photometric(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]

        def factor():
            return (1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * self.jitter).to(x.device)

        if self.jitter > 0:
            x = x * factor()
            mean = x.mean((1, 2, 3), keepdim=True)
            x = (x - mean) * factor() + mean
            grey = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
            x = (x - grey) * factor() + grey
        if self.blur > 0:
            blurred = torch.stack([v2.functional.gaussian_blur(img, [5, 5], [float(sig)])
                                   for img, sig in zip(x, torch.empty(n).uniform_(*BLUR_SIGMA, generator=g))])
            pick = (torch.rand(n, 1, 1, 1, generator=g) < self.blur).to(x.device)
            x = torch.where(pick, blurred, x)
        if self.noise > 0:
            std = (torch.rand(n, 1, 1, 1, generator=g) * 255.0 * self.noise).to(x.device)
            x = x + torch.randn_like(x) * std
        return x.clamp_(0, 255)

    def __call__(self, indices, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (N3HW float 0..255) and masks (NHW long) of the crops of these frames, on the device."""
        cw, ch = self.crop
        images, masks = [], []
        for k, (stack_img, stack_lab) in enumerate(self.stacks):
            rows = [self.where[i][1] for i in indices if self.where[i][0] == k]
            if not rows:
                continue
            idx = torch.tensor(rows, device=self.device)
            h, w = stack_img.shape[-2:]
            grid = torch.nn.functional.affine_grid(self._theta(len(rows), h, w, g).to(self.device),
                                                   [len(rows), 1, ch, cw], align_corners=False)
            images.append(torch.nn.functional.grid_sample(stack_img[idx].float(), grid, mode="bilinear",
                                                          padding_mode="zeros", align_corners=False))
            # Shift ids by one so that 0 marks "outside the frame", which becomes the ignore id.
            lab = torch.nn.functional.grid_sample(stack_lab[idx].float().unsqueeze(1) + 1, grid, mode="nearest",
                                                  padding_mode="zeros", align_corners=False).squeeze(1).long()
            masks.append(torch.where(lab == 0, self.ignore_index, lab - 1))
        return self._photometric(torch.cat(images), g), torch.cat(masks)


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
