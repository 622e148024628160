"""``python -m ssd_local.cli`` (what torchrun launches for multi-process training)."""

import sys

from . import main

sys.exit(main())
