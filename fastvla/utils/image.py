"""Image sizes: one normaliser at every boundary, so sizes travel as ``(height, width)`` tuples.

A size given as an int is square; a sequence must be two positive ints. Configs that are saved as JSON
(``FastVLAConfig``) keep a ``[height, width]`` list; everything else carries the tuple.

Example:
    >>> as_hw(64), as_hw([48, 64])
    ((64, 64), (48, 64))
"""

from __future__ import annotations

from collections.abc import Sequence


def as_hw(size: int | Sequence[int], name: str = "image_size") -> tuple[int, int]:
    """``size`` as ``(height, width)``: an int is square.

    Raises:
        ValueError: not an int or a pair of positive ints (names ``name`` and the value).
    """
    if isinstance(size, bool):  # bool is an int; True is never a size
        raise ValueError(f"{name}={size!r} must be an int or (height, width)")
    if isinstance(size, int):
        size = (size, size)
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}={size!r} must be an int or (height, width)") from err
    if h < 1 or w < 1:
        raise ValueError(f"{name}={size!r} must be positive")
    return h, w
