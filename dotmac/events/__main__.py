"""``python -m dotmac.events demo``."""

import sys

from dotmac.events.cli import main

sys.exit(main())
