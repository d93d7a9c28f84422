# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Command-line pieces shared by `cli` and `cli_bags`: the model options and the segmenter they open."""
from __future__ import annotations

import sys

from ..inference.segmenter import BACKENDS, DEVICES, PRECISIONS, SHIPPED_MODELS, Segmenter

MODEL_HELP = (f"a shipped model by name ({', '.join(SHIPPED_MODELS)}) or a checkpoint (.pt) or exported .onnx; "
              "default: driving")


def add_model_args(p, *, model_help: str = MODEL_HELP) -> None:
    """--model, --device, --backend, --precision, --input-size, --threads and --flip-tta, as the node's parameters."""
    p.add_argument("--model", help=model_help)
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto = TensorRT or PyTorch fp16 on a GPU, ONNX Runtime on a CPU")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto = int8 on CPUs with int8 dot products (VNNI, AMX) where the int8 model exists, "
                        "fp16 on GPUs, else fp32")
    p.add_argument("--input-size", default="auto", metavar="auto|model|WxH",
                   help="network input: auto = the model's input height at the frame's aspect ratio; model = the "
                        "model's training size whatever the frame; or WIDTHxHEIGHT")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for inference")
    p.add_argument("--flip-tta", action="store_true",
                   help="flip test-time augmentation: average the frame and its mirror image (2x inference time)")


def open_segmenter(args) -> Segmenter:
    """The Segmenter that add_model_args' options describe; says which model runs where."""
    seg = Segmenter(args.model, device=args.device, backend=args.backend, precision=args.precision,
                    input_size=args.input_size, threads=args.threads, flip_tta=args.flip_tta)
    print(f"model: {seg.describe()}", file=sys.stderr)
    for note in seg.notes:
        print(f"warning: {note}", file=sys.stderr)
    return seg
