"""python -m tui: the dashboard, with --fake for demo data without an engine."""

import sys

from tui.app import main

sys.exit(main())
