# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`seg-perception bench`: where a frame's time goes, and what the node gains over the pipeline a user writes first.

stages.py times each stage in one process (no DDS); end_to_end.py runs the node and the naive
pipeline (naive.py) as processes fed camera frames over DDS; report.py writes the tables.
"""
