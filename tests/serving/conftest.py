"""Serving tests: make the toy policies importable here and in server subprocesses (by module path)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # pytest runs with --import-mode=importlib: test folders are not on sys.path
    sys.path.insert(0, str(HERE))
