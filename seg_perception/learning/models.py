# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Model builders by name; every model maps an NCHW float image to NCHW logits.

torchvision's segmentation builders are used where they exist (LR-ASPP,
DeepLabV3, FCN); U-Net, which torchvision lacks, is a compact implementation
here. No builder downloads weights: models start from scratch or from one of
our checkpoints.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision import models as tv_models
from torchvision.models import segmentation as tv_seg
from torchvision.models._utils import IntermediateLayerGetter

DEFAULT_ARCH = "lraspp_mobilenet_v3_large"


class UnknownModelError(ValueError):
    """A model name or argument that no builder accepts."""


class LogitsOnly(nn.Module):
    """Wrap a torchvision segmentation model so forward returns the 'out' logits only.

    The auxiliary head (when built) is still trained: `forward_train` returns both.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(self.net(x))

    def encoder_modules(self) -> list[nn.Module]:
        return [self.net.backbone]

    def decoder_modules(self) -> list[nn.Module]:
        return [self.net.classifier]


def _set_dropout(module: nn.Module, p: float | None) -> None:
    if p is None:
        return
    for m in module.modules():
        if isinstance(m, (nn.Dropout, nn.Dropout2d)):
            m.p = float(p)


def lraspp_mobilenet_v3_large(*, num_classes: int, dropout: float | None = None) -> nn.Module:
    """LR-ASPP on MobileNetV3-Large: the real-time default (about 3.2 M parameters).

    dropout, when given, adds Dropout2d in front of both classifiers of the head.
    """
    net = tv_seg.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
    if dropout:
        head = net.classifier
        head.low_classifier = nn.Sequential(nn.Dropout2d(dropout), head.low_classifier)
        head.high_classifier = nn.Sequential(nn.Dropout2d(dropout), head.high_classifier)
    return LogitsOnly(net)


def deeplabv3(*, num_classes: int, backbone: str = "mobilenet_v3_large", aux_loss: bool = False,
              dropout: float | None = None) -> nn.Module:
    """DeepLabV3 (torchvision); backbone mobilenet_v3_large, resnet50 or resnet101."""
    builders = {
        "mobilenet_v3_large": tv_seg.deeplabv3_mobilenet_v3_large,
        "resnet50": tv_seg.deeplabv3_resnet50,
        "resnet101": tv_seg.deeplabv3_resnet101,
    }
    if backbone not in builders:
        raise UnknownModelError(f"deeplabv3 backbone '{backbone}' unknown; choose one of {sorted(builders)}")
    net = builders[backbone](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
    _set_dropout(net, dropout)
    return LogitsOnly(net)


FCN_BACKBONES = ("mobilenet_v3_large", "resnet18", "resnet50", "resnet101")


def fcn(*, num_classes: int, backbone: str = "resnet50", aux_loss: bool = False,
        dropout: float | None = None) -> nn.Module:
    """FCN (torchvision's head and builders); backbone resnet50/101 (dilated, stride 8, the classic),
    resnet18 (stride 32, as in FCN-32s) or mobilenet_v3_large (dilated, stride 16): the lighter two train on a CPU.
    """
    if backbone not in FCN_BACKBONES:
        raise UnknownModelError(f"fcn backbone '{backbone}' unknown; choose one of {list(FCN_BACKBONES)}")
    if backbone in ("resnet50", "resnet101"):
        builder = tv_seg.fcn_resnet50 if backbone == "resnet50" else tv_seg.fcn_resnet101
        net = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
    else:
        if backbone == "resnet18":
            layers, (out_ch, aux_ch) = {"layer4": "out", "layer3": "aux"}, (512, 256)
            body = tv_models.resnet18(weights=None)
        else:  # the layers deeplabv3_mobilenet_v3_large uses: stride 16 at the end, stride 8 for aux
            body = tv_models.mobilenet_v3_large(weights=None, dilated=True).features
            layers, (out_ch, aux_ch) = {"16": "out", "6": "aux"}, (960, 40)
        if not aux_loss:
            layers.pop(next(k for k, v in layers.items() if v == "aux"))
        net = tv_seg.FCN(IntermediateLayerGetter(body, return_layers=layers), tv_seg.fcn.FCNHead(out_ch, num_classes),
                         tv_seg.fcn.FCNHead(aux_ch, num_classes) if aux_loss else None)
    _set_dropout(net, dropout)
    return LogitsOnly(net)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class _UNetBase(nn.Module):
    """What both U-Nets share: a decoder that upsamples and joins each skip, and the trainer's hooks."""

    def _decode(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """Deepest features first up through the skips (given shallow to deep), then the class head."""
        for block, skip in zip(self.decoder, reversed(skips)):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)

    def forward_train(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"out": self(x)}

    def encoder_modules(self) -> list[nn.Module]:
        return [self.encoder]

    def decoder_modules(self) -> list[nn.Module]:
        return [self.decoder, self.head]


class UNet(_UNetBase):
    """U-Net (Ronneberger et al. 2015) with batch norm, bilinear upsampling and any input size."""

    def __init__(self, *, num_classes: int, base_channels: int = 32, depth: int = 4,
                 dropout: float = 0.1):
        super().__init__()
        chans = [base_channels * 2 ** i for i in range(depth + 1)]
        self.encoder = nn.ModuleList([_conv_block(3, chans[0])] +
                                     [_conv_block(chans[i], chans[i + 1]) for i in range(depth - 1)])
        self.bottleneck = nn.Sequential(_conv_block(chans[depth - 1], chans[depth]), nn.Dropout2d(dropout))
        self.decoder = nn.ModuleList(
            [_conv_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2, ceil_mode=True)
        return self._decode(self.bottleneck(x), skips)


class EncoderUNet(_UNetBase):
    """U-Net decoder on a classification encoder's stride 2..32 features (lighter than the classic U-Net)."""

    #: encoder -> (builder, the layers whose outputs are the stride 2, 4, 8, 16, 32 features, their channels)
    ENCODERS = {
        "mobilenet_v3_large": (lambda: tv_models.mobilenet_v3_large(weights=None).features,
                               ("1", "3", "6", "12", "16"), (16, 24, 40, 112, 960)),
        "resnet18": (lambda: tv_models.resnet18(weights=None),
                     ("relu", "layer1", "layer2", "layer3", "layer4"), (64, 64, 128, 256, 512)),
    }

    def __init__(self, *, num_classes: int, encoder: str, base_channels: int = 32, dropout: float = 0.1):
        super().__init__()
        build, layers, chans = self.ENCODERS[encoder]
        self.encoder = IntermediateLayerGetter(build(), return_layers={name: name for name in layers})
        self.layers = layers
        widths = [base_channels * 2 ** i for i in range(4)]  # decoder widths at strides 2, 4, 8, 16
        self.dropout = nn.Dropout2d(dropout)
        self.decoder = nn.ModuleList()
        below = chans[4]
        for i in reversed(range(4)):
            self.decoder.append(_conv_block(below + chans[i], widths[i]))
            below = widths[i]
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        skips = [feats[name] for name in self.layers]
        out = self._decode(self.dropout(skips[4]), skips[:4])  # at stride 2
        return nn.functional.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)


UNET_ENCODERS = ("classic", *EncoderUNet.ENCODERS)


def unet(*, num_classes: int, backbone: str = "classic", base_channels: int = 32, depth: int = 4,
         dropout: float = 0.1) -> nn.Module:
    """U-Net: `classic` (Ronneberger's, trained from the pixels up) or a decoder on a mobilenet_v3_large or
    resnet18 encoder (fewer operations at full resolution: what a CPU can train).
    """
    if backbone == "classic":
        return UNet(num_classes=num_classes, base_channels=base_channels, depth=depth, dropout=dropout)
    if backbone not in UNET_ENCODERS:
        raise UnknownModelError(f"unet backbone '{backbone}' unknown; choose one of {list(UNET_ENCODERS)}")
    if depth != 4:
        raise UnknownModelError(f"unet on the {backbone} encoder has depth 4 (strides 2..32), not {depth}")
    return EncoderUNet(num_classes=num_classes, encoder=backbone, base_channels=base_channels, dropout=dropout)


#: name -> (builder, short description). Aliases point at the same builder.
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "lraspp_mobilenet_v3_large": lraspp_mobilenet_v3_large,
    "lraspp": lraspp_mobilenet_v3_large,
    "unet": unet,
    "deeplabv3": deeplabv3,
    "fcn": fcn,
}


def canonical_name(name: str) -> str:
    return "lraspp_mobilenet_v3_large" if name == "lraspp" else name


def build_model(name: str, *, num_classes: int, **kwargs) -> nn.Module:
    """Build a model by name; unknown names and arguments fail with the accepted ones."""
    if name not in BUILDERS:
        raise UnknownModelError(f"unknown model '{name}'; choose one of {sorted(BUILDERS)}")
    builder = BUILDERS[name]
    try:
        return builder(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        import inspect
        accepted = [p for p in inspect.signature(builder).parameters if p != "num_classes"]
        raise UnknownModelError(f"model '{name}' does not take {sorted(kwargs)}: {exc}; accepted: {accepted}") from None


def class_probabilities(model: nn.Module, x: torch.Tensor, *, flip: bool = False,
                        temperature: float = 1.0) -> torch.Tensor:
    """Softmax class probabilities (NCHW, fp32); with flip, averaged with the mirror image's (flip TTA)."""
    if flip:
        x = torch.cat([x, x.flip(3)])
    probs = (model(x).float() / temperature).softmax(1)
    if flip:
        n = x.shape[0] // 2
        probs = (probs[:n] + probs[n:].flip(3)) / 2
    return probs


def train_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Main and (if built) auxiliary logits for the loss."""
    if hasattr(model, "forward_train"):
        return model.forward_train(x)
    return {"out": model(x)}


FREEZE_MODES = ("none", "encoder", "all_but_decoder")


def apply_freeze(model: nn.Module, mode: str) -> list[nn.Module]:
    """Freeze parameters for fine-tuning; returns the frozen modules (kept in eval mode by the trainer)."""
    if mode not in FREEZE_MODES:
        raise ValueError(f"unknown freeze mode '{mode}'; choose one of {list(FREEZE_MODES)}")
    for p in model.parameters():
        p.requires_grad_(True)
    if mode == "none":
        return []
    if mode == "encoder":
        frozen = list(model.encoder_modules())
    else:
        decoder_params = {id(p) for m in model.decoder_modules() for p in m.parameters()}
        frozen = [m for m in model.modules() if len(list(m.children())) == 0
                  and any(id(p) not in decoder_params for p in m.parameters(recurse=False))]
    for m in frozen:
        for p in m.parameters():
            p.requires_grad_(False)
    return frozen


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
