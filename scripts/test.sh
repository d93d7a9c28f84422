#!/usr/bin/env bash
# Set up (scripts/setup.sh: quick when already done) and run every test with pytest.
# Extra arguments go to pytest, e.g.: bash scripts/test.sh test/test_demo.py -x
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
echo "==> running the tests (.venv/bin/python -m pytest)"
exec .venv/bin/python -m pytest "$@"
