"""``python -m vococore`` runs the CLI."""

import sys

from vococore.cli import main

sys.exit(main())
