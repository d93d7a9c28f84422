# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Running a trained model on frames: checkpoints, the Segmenter (PyTorch or ONNX Runtime), export, masks."""
