# Copyright 2026 The seg_perception authors
# SPDX-License-Identifier: Apache-2.0
"""The pipeline benchmark of issue #12: `seg-perception bench` from a checkout, without installing the command.

Per stage and end to end over DDS, at 480x360, 1280x720 and 1920x1080, for 1, 2 and 4 cameras, on
every available backend, with the naive pipeline as the reference (see seg_perception/cli/bench.py).
Not a test: the figures depend on the machine.

    .venv/bin/python benchmarks/pipeline.py --quick
    .venv/bin/python benchmarks/pipeline.py --markdown docs/performance.md --json performance.json
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seg_perception.cli.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
