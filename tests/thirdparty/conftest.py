"""Third-party env tests: run in the venv that has the packages (see docs/thirdparty.md), skip elsewhere."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # --import-mode=importlib: make thirdparty_helpers importable
    sys.path.insert(0, str(HERE))
