"""``python -m polytask``."""

import sys

from polytask.cli import main

sys.exit(main())
