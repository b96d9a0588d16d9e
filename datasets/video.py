"""Video encoding, decoding and concatenation with PyAV (torchcodec used for decoding when installed).

LeRobot v3.0 stores many episodes back to back in one mp4 per camera; an episode's frame ``i`` lies at
``from_timestamp + timestamp_i`` of that file. Frames are matched to the nearest decoded frame within a
tolerance, as lerobot does, so that rounding in container time bases never shifts a frame.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np

# Encoder presets: (PyAV codec name, options). AV1 matches lerobot's defaults (libsvtav1, crf 30, g 2).
CODECS: dict[str, tuple[str, dict[str, str]]] = {
    "av1": ("libsvtav1", {"crf": "30", "preset": "12", "g": "2"}),
    "h264": ("libx264", {"crf": "23", "preset": "veryfast", "g": "2", "bf": "0"}),
}
# Written into meta/info.json: features[key]["info"]["video.codec"].
CODEC_INFO_NAME = {"av1": "av1", "h264": "h264"}


_TORCHCODEC_BROKEN = False  # set after torchcodec failed once in "auto" mode


class VideoDecodeError(RuntimeError):
    """A video file is missing, unreadable, or lacks the frames the metadata points at."""


def _open(path: str | os.PathLike) -> av.container.InputContainer:
    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(
            f"video file {path} is missing; the dataset metadata references it. Re-download the dataset "
            "(or restore the file) — a partial copy cannot be read."
        )
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoDecodeError(
            f"cannot open video {path}: {err}. The file is corrupt; re-download it."
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(f"{path} has no video stream; the file is corrupt or not a video")
    return container


@contextlib.contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Turn PyAV/FFmpeg errors raised while demuxing or decoding into a VideoDecodeError naming the file."""
    try:
        yield
    except (av.error.FFmpegError, OSError, ValueError) as err:
        raise VideoDecodeError(
            f"decoding {path} failed ({type(err).__name__}: {err}); the file is truncated or corrupt. "
            "Re-download or re-record the dataset."
        ) from err


def _torchcodec_decode(path: Path, timestamps: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        from torchcodec.decoders import VideoDecoder  # type: ignore[import-not-found]
    except Exception:
        return None
    decoder = VideoDecoder(str(path), seek_mode="approximate")
    batch = decoder.get_frames_played_at(list(timestamps))
    gaps = np.abs(batch.pts_seconds.numpy() - np.asarray(timestamps, dtype=np.float64))
    return batch.data.permute(0, 2, 3, 1).numpy(), gaps  # (N, H, W, 3) uint8, (N,)


def decode_frames(
    path: str | os.PathLike,
    timestamps: Sequence[float],
    tolerance_s: float,
    backend: str = "auto",
) -> np.ndarray:
    """Decode the frames nearest to ``timestamps`` (seconds) from one video file.

    Args:
        path: the mp4 file.
        timestamps: query times in seconds (any order).
        tolerance_s: largest allowed gap between a query and the nearest decoded frame.
        backend: ``"pyav"``, ``"torchcodec"`` or ``"auto"`` (torchcodec if installed, else PyAV).

    Returns:
        uint8 array ``(len(timestamps), H, W, 3)``.
    """
    path = Path(path)
    if backend in ("auto", "torchcodec"):
        if not path.is_file():
            _open(path)  # raises the helpful error
        global _TORCHCODEC_BROKEN
        try:
            out = None if (_TORCHCODEC_BROKEN and backend == "auto") else _torchcodec_decode(path, timestamps)
        except Exception as err:  # an incompatible torchcodec/FFmpeg install, or a corrupt file
            if backend == "torchcodec":
                raise VideoDecodeError(f"torchcodec cannot decode {path} ({err!r}); corrupt file?") from err
            warnings.warn(f"torchcodec failed ({err!r}); decoding with PyAV instead", stacklevel=2)
            _TORCHCODEC_BROKEN, out = True, None
        if out is not None:
            frames, gaps = out
            if (gaps > tolerance_s).any():
                bad = int(gaps.argmax())
                raise VideoDecodeError(
                    f"frame at t={timestamps[bad]:.4f}s not found in {path} (off by {gaps[bad]:.4f}s, "
                    f"tolerance {tolerance_s:.4f}s); the video and the metadata disagree."
                )
            return frames
        if backend == "torchcodec":
            raise ImportError(
                "video backend 'torchcodec' requested but not installed; pip install torchcodec"
            )
    query = np.asarray(timestamps, dtype=np.float64)
    first, last = float(query.min()), float(query.max())
    times: list[float] = []
    frames: list[np.ndarray] = []
    with _open(path) as container, _decoding(path):
        stream = container.streams.video[0]
        if first > 0:
            container.seek(int(first / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if frame.time < first - tolerance_s:
                continue
            times.append(float(frame.time))
            frames.append(frame.to_ndarray(format="rgb24"))
            if frame.time >= last:
                break
    if not frames:
        raise VideoDecodeError(
            f"no frames near t={first:.4f}s..{last:.4f}s in {path}; the video is shorter than the metadata "
            "says (truncated file?). Re-download or re-record the dataset."
        )
    decoded = np.asarray(times)
    nearest = np.abs(query[:, None] - decoded[None, :]).argmin(axis=1)
    gaps = np.abs(decoded[nearest] - query)
    if (gaps > tolerance_s).any():
        bad = int(gaps.argmax())
        raise VideoDecodeError(
            f"frame at t={query[bad]:.4f}s not found in {path} (nearest decoded frame t="
            f"{decoded[nearest[bad]]:.4f}s, tolerance {tolerance_s:.4f}s). The video and the metadata "
            "disagree: the file is truncated or belongs to another dataset version."
        )
    return np.stack([frames[i] for i in nearest])


def iter_frames(
    path: str | os.PathLike,
    size: tuple[int, int] | None = None,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Decode a video sequentially, yielding ``(time_s, uint8 (H, W, 3))``, resized if ``size`` is given.

    Args:
        path: the mp4 file.
        size: ``(height, width)``; resized by swscale (area filter) during colour conversion.
        start_s: skip (by seeking to the preceding keyframe) to this time.
        end_s: stop after the first frame at or beyond this time.
    """
    path = Path(path)
    with _open(path) as container, _decoding(path):
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start_s > 0:
            container.seek(int(start_s / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            if frame.time is None:
                continue
            if size is not None and (frame.height, frame.width) != tuple(size):
                frame = frame.reformat(width=size[1], height=size[0], format="rgb24", interpolation="AREA")
            yield float(frame.time), frame.to_ndarray(format="rgb24")
            if end_s is not None and frame.time >= end_s:
                break


def frame_times(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video (no colour conversion) and return their times in seconds, in order."""
    path = Path(path)
    times = []
    with _open(path) as container, _decoding(path):
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if frame.time is not None:
                times.append(float(frame.time))
    return np.asarray(times, dtype=np.float64)


def video_info(path: str | os.PathLike) -> dict:
    """Codec, size, fps and frame count (from the container header) of a video file."""
    with _open(path) as container, _decoding(Path(path)):
        stream = container.streams.video[0]
        return {
            "codec": stream.codec_context.name,
            "height": stream.codec_context.height,
            "width": stream.codec_context.width,
            "fps": float(stream.average_rate) if stream.average_rate else None,
            "frames": stream.frames,
            "pix_fmt": stream.codec_context.pix_fmt,
        }


class VideoEncoder:
    """Streams uint8 RGB frames into an mp4 file.

    Args:
        path: output file (written in place; callers rename it into the dataset when complete).
        fps: frame rate.
        height: frame height (even).
        width: frame width (even).
        codec: ``"h264"`` (fast) or ``"av1"`` (lerobot's default, SVT-AV1).
    """

    def __init__(self, path: str | os.PathLike, fps: int, height: int, width: int, codec: str = "h264"):
        if codec not in CODECS:
            raise ValueError(f"unknown video codec {codec!r}; choose one of {sorted(CODECS)}")
        if height % 2 or width % 2:
            raise ValueError(
                f"video frames must have even height and width for yuv420p; got {height}x{width}"
            )
        name, options = CODECS[codec]
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr otherwise
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self.path), "w")
        self._stream = self._container.add_stream(name, rate=fps, options=dict(options))
        self._stream.width, self._stream.height = width, height
        self._stream.pix_fmt = "yuv420p"
        self.frames = 0

    def add(self, image: np.ndarray) -> None:
        """Encode one ``uint8 (H, W, 3)`` frame."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        """Flush the encoder and finish the file."""
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def abort(self) -> None:
        """Close without caring about the result and delete the file."""
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.close()
        self._container = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def concat_videos(inputs: Sequence[tuple[str | os.PathLike, float]], output: str | os.PathLike) -> None:
    """Stream-copy videos back to back into ``output`` (no re-encoding).

    Args:
        inputs: ``(path, start_time_s)`` pairs; each input's packets are shifted to start at its time.
        output: the mp4 to write (overwritten).
    """
    out = av.open(str(output), "w")
    try:
        out_stream = None
        for path, start in inputs:
            with _open(path) as container:
                in_stream = container.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(in_stream, opaque=True)
                for packet in container.demux(in_stream):
                    if packet.dts is None:  # flush packet
                        continue
                    shift = round(start / packet.time_base)
                    packet.pts = (packet.pts if packet.pts is not None else packet.dts) + shift
                    packet.dts = packet.dts + shift
                    packet.stream = out_stream
                    out.mux(packet)
    finally:
        out.close()


def truncate_video(path: str | os.PathLike, end_s: float, output: str | os.PathLike) -> None:
    """Stream-copy the packets of ``path`` that start before ``end_s`` seconds into ``output``."""
    out = av.open(str(output), "w")
    try:
        with _open(path) as container:
            in_stream = container.streams.video[0]
            out_stream = out.add_stream_from_template(in_stream, opaque=True)
            for packet in container.demux(in_stream):
                if packet.dts is None or packet.pts is None:
                    continue
                if float(packet.pts * packet.time_base) > end_s:
                    continue
                packet.stream = out_stream
                out.mux(packet)
    finally:
        out.close()
