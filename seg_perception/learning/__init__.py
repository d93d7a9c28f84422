# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Making models: datasets, augmentation, model builders, losses, the trainer and frame harvesting."""
