"""`python -m seg_perception.cli`: the `seg-perception` command without installing its script."""
import sys

from .main import main

sys.exit(main())
