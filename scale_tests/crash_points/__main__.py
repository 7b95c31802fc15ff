"""`python -m scale_tests.crash_points`: see cli.py."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
