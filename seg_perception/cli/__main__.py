# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""`python -m seg_perception.cli`: the `seg-perception` command without installing its script."""
import sys

from .main import main

sys.exit(main())
