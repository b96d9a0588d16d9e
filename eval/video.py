"""Evaluation videos: tiled cameras, the instruction on the frame, a green/red success border.

Frames are collected in the rollout loop as raw camera images; composing and encoding happen in a
background thread (:class:`VideoWriter`) so the rollout never waits on the encoder. Each episode becomes
an H.264 MP4 (PyAV); a few episodes are also kept as thumbnails for a summary grid GIF.
"""

from __future__ import annotations

import logging
import os
import queue
import textwrap
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fastvla.utils.io import atomic_file

logger = logging.getLogger(__name__)

SUCCESS_RGB = (40, 180, 60)
FAILURE_RGB = (210, 40, 40)
BANNER_RGB = (0, 0, 0)
TEXT_RGB = (255, 255, 255)


def image_paths_of_space(space: Any, prefix: str = "") -> list[str]:
    """Observation paths (``/``-separated) of every RGB image in an observation space.

    An image is a ``Box`` of dtype uint8 and shape ``(H, W, 3)``; ``Dict`` spaces are searched
    recursively, so a FastVLA env gives ``["pixels/front", "pixels/wrist"]`` and an env with
    ``{"cam_high": img, "qpos": vec}`` gives ``["cam_high"]``.
    """
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        paths: list[str] = []
        for name, sub in space.spaces.items():
            paths += image_paths_of_space(sub, f"{prefix}{name}/")
        return paths
    shape = tuple(getattr(space, "shape", None) or ())
    if isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(shape) == 3 and shape[-1] == 3:
        return [prefix.rstrip("/")]
    return []


def get_path(obs: Any, path: str) -> Any:
    """Look up a ``/``-separated key path in a nested observation dict (a flat key with ``/`` first)."""
    if isinstance(obs, Mapping) and path in obs:
        return obs[path]
    value = obs
    for part in filter(None, path.split("/")):
        if not isinstance(value, Mapping) or part not in value:
            available = list(value) if isinstance(value, Mapping) else type(value).__name__
            raise KeyError(f"observation has no key {part!r} (path {path!r}); available: {available}")
        value = value[part]
    return value


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: bitmap font without sizes
        return ImageFont.load_default()


def _banner(text: str, width: int, font_size: int = 12) -> np.ndarray:
    """A black strip with ``text`` wrapped to ``width`` pixels, ``(h, width, 3)`` uint8."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    chars_per_line = max(8, int(width / (0.55 * font_size)))
    lines = textwrap.wrap(text, chars_per_line)[:3] or [""]
    line_h = font_size + 3
    height = line_h * len(lines) + 6
    img = Image.new("RGB", (width, height), BANNER_RGB)
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((4, 3 + i * line_h), line, fill=TEXT_RGB, font=font)
    return np.asarray(img)


def _resize(image: np.ndarray, height: int) -> np.ndarray:
    if image.shape[0] == height:
        return image
    from PIL import Image

    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def tile_cameras(images: Sequence[np.ndarray]) -> np.ndarray:
    """Cameras side by side at the height of the tallest one, ``(H, sum W, 3)`` uint8."""
    if not images:
        raise ValueError("no camera images to tile; pass at least one (H, W, 3) image")
    height = max(img.shape[0] for img in images)
    return np.concatenate([_resize(np.asarray(img, dtype=np.uint8), height) for img in images], axis=1)


class FrameComposer:
    """Composes the video frames of one episode: banner with the instruction, tiles, coloured border.

    Args:
        text: Instruction written on top of the frame.
        success: Green border when true, red when false, none when ``None``.
        border: Border width in pixels.
        min_width: Tiles narrower than this are enlarged by an integer factor (nearest neighbour) so the
            text stays readable on small camera images.
    """

    def __init__(self, text: str, success: bool | None, border: int = 4, min_width: int = 256) -> None:
        self.text = text
        self.min_width = min_width
        self.border = border if success is not None else 0
        self.color = np.array(SUCCESS_RGB if success else FAILURE_RGB, dtype=np.uint8)
        self._banner: np.ndarray | None = None

    def __call__(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """One composed frame, with even height and width (H.264's 4:2:0 needs them)."""
        tiles = tile_cameras(images)  # (H, W, 3)
        scale = -(-self.min_width // tiles.shape[1])  # ceil
        if scale > 1:
            tiles = tiles.repeat(scale, axis=0).repeat(scale, axis=1)  # (s·H, s·W, 3)
        h, w = tiles.shape[:2]
        if self._banner is None or self._banner.shape[1] != w:
            self._banner = _banner(self.text, w) if self.text else np.zeros((0, w, 3), np.uint8)
        b = self.border
        total_h, total_w = h + self._banner.shape[0] + 2 * b, w + 2 * b
        total_h, total_w = total_h + total_h % 2, total_w + total_w % 2
        canvas = np.empty((total_h, total_w, 3), dtype=np.uint8)
        canvas[:] = self.color if b else 0
        top = b + self._banner.shape[0]
        canvas[b:top, b : b + w] = self._banner
        canvas[top : top + h, b : b + w] = tiles
        return canvas


def write_mp4(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int = 30, crf: int = 23) -> Path:
    """Encode RGB frames ``(H, W, 3)`` uint8 into an H.264 MP4, atomically (temp file + rename).

    Args:
        path: Output ``.mp4`` path; parent folders are created.
        frames: Frames of equal, even size.
        fps: Frame rate.
        crf: x264 constant rate factor (lower is better quality, larger files).

    Returns:
        The path written.
    """
    import av

    path = Path(path)
    if not frames:
        raise ValueError(f"no frames to write to {path}")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even frame sizes, got {width}x{height}; pad the frames by one pixel")
    with atomic_file(path, suffix=".mp4") as tmp, av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(video_frame))
        container.mux(stream.encode(None))
    return path


def count_frames(path: str | os.PathLike) -> int:
    """Number of frames of a video file, by decoding it."""
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def write_grid_gif(
    path: str | os.PathLike,
    episodes: Sequence[Sequence[np.ndarray]],
    fps: int = 10,
    columns: int | None = None,
) -> Path:
    """Tile several episodes' frames into one looping GIF; short episodes hold their last frame.

    Args:
        path: Output ``.gif`` path.
        episodes: One list of equally sized frames per episode.
        fps: Playback frame rate of the GIF.
        columns: Tiles per row (default: ``ceil(sqrt(n))``).
    """
    from PIL import Image

    if not episodes or not all(episodes):
        raise ValueError("write_grid_gif needs at least one non-empty episode")
    n = len(episodes)
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    th = max(f[0].shape[0] for f in episodes)
    tw = max(f[0].shape[1] for f in episodes)
    n_frames = max(len(f) for f in episodes)
    images = []
    for t in range(n_frames):
        canvas = np.zeros((rows * th, columns * tw, 3), dtype=np.uint8)  # (rows·H, cols·W, 3)
        for i, frames in enumerate(episodes):
            frame = frames[min(t, len(frames) - 1)]
            r, c = divmod(i, columns)
            canvas[r * th : r * th + frame.shape[0], c * tw : c * tw + frame.shape[1]] = frame
        images.append(Image.fromarray(canvas))
    path = Path(path)
    with atomic_file(path, suffix=".gif") as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0
        )
    return path


class VideoWriter:
    """Background writer of episode videos: the rollout hands over raw frames and moves on.

    Composition (tiling, text, border) and encoding run in one worker thread. The first
    ``grid_episodes`` episodes submitted are also kept as small thumbnails for
    :meth:`write_grid`.

    Args:
        fps: Frame rate of the MP4s.
        grid_episodes: How many episodes the summary grid shows.
        grid_width: Width in pixels of one grid tile.
        grid_stride: Keep every ``grid_stride``-th frame in the grid.
        max_pending: Episodes queued at most before :meth:`submit` blocks (bounds memory).
    """

    def __init__(
        self,
        fps: int = 30,
        grid_episodes: int = 9,
        grid_width: int = 192,
        grid_stride: int = 3,
        max_pending: int = 8,
    ) -> None:
        self.fps = fps
        self.grid_episodes = grid_episodes
        self.grid_width = grid_width
        self.grid_stride = grid_stride
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thumbs: list[list[np.ndarray]] = []
        self._grid_fps = max(1, round(fps / grid_stride))
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fastvla-video-writer", daemon=True)
        self._thread.start()

    def submit(
        self,
        path: str | os.PathLike,
        frames: list[list[np.ndarray]],
        text: str,
        success: bool | None,
        fps: int | None = None,
    ) -> None:
        """Queue one episode: ``frames[t]`` is the list of camera images at step ``t``.

        Args:
            path: Output ``.mp4`` path.
            frames: Camera images per step.
            text: Instruction written on the frames.
            success: Border colour (green/red; none when ``None``).
            fps: Frame rate of this video (default: the writer's).
        """
        if self._error is not None:
            raise RuntimeError(f"video writer failed: {self._error}") from self._error
        self._queue.put((Path(path), frames, text, success, fps or self.fps))

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._write(*item)
            except BaseException as err:  # surfaced by submit()/close()
                logger.exception("writing %s failed", item[0])
                self._error = err

    def _write(self, path: Path, frames: list, text: str, success: bool | None, fps: int) -> None:
        compose = FrameComposer(text, success)
        composed = [compose(images) for images in frames]
        write_mp4(path, composed, fps=fps)
        # Episodes arrive in evaluation order, so the grid always shows the same first episodes.
        if len(self._thumbs) < self.grid_episodes:
            self._grid_fps = max(1, round(fps / self.grid_stride))  # real time
            height = round(composed[0].shape[0] * self.grid_width / composed[0].shape[1])
            kept = composed[:: self.grid_stride]
            if (len(composed) - 1) % self.grid_stride:
                kept.append(composed[-1])  # always end on the final state
            self._thumbs.append([_resize_wh(f, self.grid_width, height) for f in kept])

    def close(self) -> None:
        """Wait until every queued video is written; re-raise the first error of the worker."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"video writer failed: {self._error}") from self._error

    def write_grid(self, path: str | os.PathLike) -> Path | None:
        """Write the summary grid GIF of the kept episodes (call after :meth:`close`)."""
        if not self._thumbs:
            return None
        return write_grid_gif(path, self._thumbs, fps=self._grid_fps)


def _resize_wh(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    height += height % 2
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
