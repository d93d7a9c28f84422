# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The `seg-perception` command: one subcommand per job (train, evaluate, export, demo, bags...)."""
