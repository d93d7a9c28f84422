# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""Measuring models: metrics, evaluation on labelled images and on bags, reports and plots."""
