"""``python -m fastvla`` runs the command line (also what ``accelerate launch -m fastvla`` uses)."""

import sys

from fastvla.cli import main

sys.exit(main())
