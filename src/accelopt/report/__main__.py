"""``python -m accelopt.report SWEEP_DIR [--skip-bad] [--baseline METHOD] [--out DIR]``."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
