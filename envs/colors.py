"""The cube colours of the tabletop tasks, and the colour the shipped base never hears named.

Kept apart from the env classes so that importing it loads no MuJoCo.
"""

from __future__ import annotations

#: Colour names used in instructions -> RGBA.
COLORS: dict[str, tuple[float, float, float, float]] = {
    "red": (0.85, 0.12, 0.12, 1.0),
    "green": (0.12, 0.68, 0.2, 1.0),
    "blue": (0.12, 0.3, 0.9, 1.0),
    "yellow": (0.95, 0.82, 0.1, 1.0),
    "purple": (0.55, 0.2, 0.75, 1.0),
    "orange": (1.0, 0.5, 0.05, 1.0),
}

#: The held-out variation of the ``sim-base`` checkpoint: its pretraining instructions never name this
#: colour (purple cubes do appear, as distractors); ``make demo`` fine-tunes the base to follow it.
HELD_OUT_COLOR = "purple"
#: Colours the ``sim-base`` pretraining instructions name (``instruction_colors`` of its recording).
TRAIN_COLORS: tuple[str, ...] = tuple(c for c in COLORS if c != HELD_OUT_COLOR)
