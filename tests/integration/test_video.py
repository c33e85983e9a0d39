"""``aioflow.io.video``: sources, writers, JPEG and drawing on real video.

Every video is written with OpenCV into ``tmp_path``; every network stream is a real aiohttp
server on 127.0.0.1 serving MJPEG (``multipart/x-mixed-replace``), read by OpenCV's FFMPEG
backend. The checks are what a user sees: the frames (count, order, indices, timestamps, pixels),
the statistics (drops, reconnects), the errors, the files written, and the threads left alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import pickle
import socket
import sys
import threading
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

import aioflow as af
from aioflow.io import video
from aioflow.io.video import Frame, VideoSourceError, video_source

pytestmark = pytest.mark.integration

W, H = 64, 48
FPS = 10.0


# -- synthetic content ------------------------------------------------------------------------


def picture(i: int) -> np.ndarray:
    """Frame ``i`` (< 14): a grey level 12*i, and a white 8x8 square whose left edge is at
    x = 4*i. Longer videos repeat the pattern."""
    i %= 14
    img = np.full((H, W, 3), 12 * i, np.uint8)
    img[20:28, 4 * i : 4 * i + 8] = 255
    return img


def grey_of(img: np.ndarray) -> float:
    return float(img[:16].mean())  # the rows above the square


def square_x(img: np.ndarray) -> int:
    """The left edge of the white square: the first column whose middle rows are bright."""
    return int(np.argmax(img[22:26].mean(axis=(0, 2)) > 200))


def write_video(path: Path, n: int, fourcc: str = "mp4v", fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"no {fourcc} encoder in this OpenCV build"
    for i in range(n):
        writer.write(picture(i))
    writer.release()
    return path


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def aioflow_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("aioflow")]


async def wait_for(condition: Callable[[], bool]) -> None:
    """Wait (polling, without a deadline of our own: the test timeout bounds it) until true."""
    while not condition():
        await asyncio.sleep(0.005)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return write_video(tmp_path / "clip.mp4", 12)


# -- an MJPEG server on loopback --------------------------------------------------------------


def level(k: int) -> int:
    return (k * 10) % 200  # the left half of picture k of a stream (JPEG keeps it within ~3)


class MjpegServer:
    """Serves ``/stream.mjpg``: an endless MJPEG stream; frame k of a connection has its left half
    at grey ``level(k)`` and its right half at ``50 * generation`` (which server run sent it)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.port = 0
        self.generation = 0
        self.sent = 0
        self.runner: web.AppRunner | None = None
        self.stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    async def start(self) -> None:
        self.generation += 1
        self.stopping = asyncio.Event()
        app = web.Application()
        app.router.add_get("/stream.mjpg", self.stream)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        self.stopping.set()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    def jpeg(self, k: int) -> bytes:
        img = np.empty((H, W, 3), np.uint8)
        img[:, : W // 2] = level(k)
        img[:, W // 2 :] = 50 * self.generation
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        return buf.tobytes()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"}
        )
        await resp.prepare(request)
        k = 0
        stopping = self.stopping
        with contextlib.suppress(ConnectionError):
            while not stopping.is_set():
                data = self.jpeg(k)
                head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                await resp.write(head % len(data) + data + b"\r\n")
                self.sent += 1
                k += 1
                await asyncio.sleep(self.interval)
        return resp


@pytest.fixture
async def server() -> AsyncIterator[MjpegServer]:
    srv = MjpegServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    yield
    assert aioflow_threads() == []


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fourcc"), [("clip.mp4", "mp4v"), ("clip.avi", "MJPG")])
async def test_a_file_decodes_every_frame_in_order_with_its_content(
    tmp_path: Path, name: str, fourcc: str
) -> None:
    path = write_video(tmp_path / name, 12, fourcc)
    async with video_source(path) as source:
        frames = [frame async for frame in source]
        stats = source.statistics()["clip"]

    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    assert {f.stream for f in frames} == {"clip"}
    stamps = [f.timestamp for f in frames]
    assert stamps[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(stamps))
    assert stamps[-1] == pytest.approx(11 / FPS, abs=1e-3)
    for i, f in enumerate(frames):
        assert f.image.shape == (H, W, 3)
        assert f.image.dtype == np.uint8
        assert grey_of(f.image) == pytest.approx(12 * i, abs=6), f"frame {i}"
        assert abs(square_x(f.image) - 4 * i) <= 1, f"frame {i}"
    meta = frames[0].meta
    assert meta["fps"] == pytest.approx(FPS)
    assert (meta["width"], meta["height"], meta["frame_count"]) == (W, H, 12)
    assert meta["live"] is False
    assert meta["uri"] == str(path)
    assert stats.live is False
    assert stats.state == "ended"
    assert stats.read == stats.emitted == 12
    assert stats.dropped == stats.skipped == 0


async def test_start_stop_fps_and_resize_select_and_shape_frames(clip: Path) -> None:
    source = video_source(clip, start=2, stop=11, fps=FPS / 2, resize=(32, 24))
    frames = [frame async for frame in source]

    assert [f.index for f in frames] == [2, 4, 6, 8, 10]  # positions in the file, every other
    assert [round(f.timestamp, 3) for f in frames] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert all(f.image.shape == (24, 32, 3) for f in frames)
    assert [round(grey_of(cv2.resize(f.image, (W, H))) / 12) for f in frames] == [2, 4, 6, 8, 10]
    assert frames[0].meta["width"] == W  # meta describes the source, not the resized frames
    stats = source.statistics()["clip"]
    assert (stats.read, stats.emitted, stats.skipped) == (9, 5, 4)


async def test_realtime_reads_every_frame_of_a_file(clip: Path) -> None:
    frames = [f async for f in video_source(clip, realtime=True, stop=4)]
    assert [f.index for f in frames] == [0, 1, 2, 3]


async def test_a_file_is_read_ahead_only_as_far_as_the_buffer(tmp_path: Path) -> None:
    path = write_video(tmp_path / "long.avi", 40, "MJPG")
    async with video_source(path, buffer=3) as source:
        first = await anext(source)
        await wait_for(lambda: source.statistics()["long"].buffered == 3)
        for _ in range(5):  # give the reader every chance to read further than it may
            await asyncio.sleep(0.01)
        stats = source.statistics()["long"]
        assert first.index == 0
        assert (stats.read, stats.emitted, stats.buffered) == (4, 1, 3)
        assert stats.dropped == 0  # a file never drops: the reader waits


# -- image folders ----------------------------------------------------------------------------


async def test_an_image_folder_is_a_stream_in_natural_name_order(tmp_path: Path) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in range(12):
        assert cv2.imwrite(str(folder / f"frame{i}.png"), picture(i))  # frame10 after frame9
    (folder / "notes.txt").write_text("not an image")

    frames = [f async for f in video_source(folder)]

    assert [f.index for f in frames] == list(range(12))
    assert {f.stream for f in frames} == {"shots"}
    for i, f in enumerate(frames):
        assert np.array_equal(f.image, picture(i)), f"frame {i}"  # PNG: exact
        assert f.meta["path"] == str(folder / f"frame{i}.png")
        assert f.timestamp == pytest.approx(i / 25)
    assert frames[0].meta["live"] is False
    assert frames[0].meta["frame_count"] == 12


async def test_a_damaged_image_in_a_folder_is_left_out_named_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A folder of camera snapshots with a damaged one among them (a write cut off, a disk
    # error): the stream goes on past it, the file named in a warning and counted.
    folder = tmp_path / "snaps"
    folder.mkdir()
    for i in range(6):
        assert cv2.imwrite(str(folder / f"frame{i}.png"), picture(i))
    (folder / "frame2.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (folder / "frame4.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="aioflow"):
        async with video_source(folder) as source:
            frames = [f async for f in source]
            stats = source.statistics()["snaps"]

    # The others came through, in order, with their content and their place in the folder.
    assert [f.index for f in frames] == [0, 1, 3, 5]
    for f in frames:
        assert np.array_equal(f.image, picture(f.index))
        assert f.timestamp == pytest.approx(f.index / 25)
    assert stats.state == "ended"
    assert stats.unreadable == 2
    assert stats.read == stats.emitted + stats.unreadable == 6
    left_out = [r.getMessage() for r in caplog.records if "left out" in r.getMessage()]
    assert len(left_out) == 2
    assert str(folder / "frame2.png") in left_out[0]
    assert str(folder / "frame4.png") in left_out[1]
    assert all("'snaps'" in message for message in left_out)


async def test_a_folder_whose_images_all_fail_to_decode_fails_saying_so(tmp_path: Path) -> None:
    folder = tmp_path / "junk"
    folder.mkdir()
    for i in range(3):
        (folder / f"frame{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VideoSourceError, match="no frame decodes"):
        [f async for f in video_source(folder)]


# -- several sources --------------------------------------------------------------------------


async def test_sources_merge_into_one_stream_of_frames_tagged_by_stream(
    tmp_path: Path, clip: Path
) -> None:
    other = write_video(tmp_path / "other.avi", 7, "MJPG")
    folder = tmp_path / "stills"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"{i:03d}.png"), picture(i))

    source = video_source({"left": clip, "right": other, "stills": folder})
    frames = [f async for f in source]

    assert source.streams == ("left", "right", "stills")
    by_stream: dict[str, list[Frame]] = {}
    for f in frames:
        by_stream.setdefault(f.stream, []).append(f)
    counts = {"left": 12, "right": 7, "stills": 3}
    assert {k: len(v) for k, v in by_stream.items()} == counts
    for stream, got in by_stream.items():
        assert [f.index for f in got] == list(range(counts[stream])), stream
        assert all(abs(square_x(f.image) - 4 * f.index) <= 1 for f in got), stream


async def test_a_list_of_sources_gets_unique_stream_ids(tmp_path: Path, clip: Path) -> None:
    source = video_source([clip, clip, str(clip)])
    frames = [f async for f in source]
    assert source.streams == ("clip", "clip-2", "clip-3")
    for stream in source.streams:
        assert [f.index for f in frames if f.stream == stream] == list(range(12))


# -- live HTTP --------------------------------------------------------------------------------


async def test_an_http_mjpeg_stream_is_read_live(server: MjpegServer) -> None:
    before = time.time()
    async with video_source(server.url, buffer=64, read_timeout=2) as source:
        frames = [await anext(source) for _ in range(5)]
        stats = source.statistics()["stream"]

    assert stats.live is True  # live=None picked live for http://
    assert frames[0].meta["live"] is True
    assert frames[0].meta["uri"] == server.url
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))
    for f in frames:
        assert f.image.shape == (H, W, 3)
        assert float(f.image[:, : W // 2].mean()) == pytest.approx(level(f.index), abs=4)
        assert float(f.image[:, W // 2 :].mean()) == pytest.approx(50, abs=4)
    stamps = [f.timestamp for f in frames]  # wall-clock capture times
    assert before <= stamps[0]
    assert stamps == sorted(stamps)
    assert stamps[-1] <= time.time()


async def test_live_keeps_only_the_newest_frames_when_the_consumer_is_slow(
    server: MjpegServer,
) -> None:
    async with video_source(server.url, buffer=1, read_timeout=2) as source:
        await anext(source)
        for _ in range(3):
            # A slow consumer: while it is busy, the reader reads 20 frames more.
            read_before = source.statistics()["stream"].read

            def moved_on(r: int = read_before) -> bool:
                return source.statistics()["stream"].read >= r + 20

            await wait_for(moved_on)
            read_now = source.statistics()["stream"].read
            frame = await anext(source)
            # What it gets is the newest frame, never a backlog: with buffer=1 that is the
            # last frame read when it asked (or a later one).
            assert frame.index >= read_now - 1
        stats = source.statistics()["stream"]

    assert stats.dropped >= 3 * 19 - 3
    assert source.dropped == stats.dropped
    assert stats.read == stats.emitted + stats.dropped + stats.skipped + stats.buffered


async def test_a_live_stream_that_drops_is_reconnected(server: MjpegServer) -> None:
    retry = af.Retry(attempts=100, backoff=0.01, max_backoff=0.05)
    async with video_source(server.url, reconnect=retry, read_timeout=2) as source:
        first = await anext(source)
        assert float(first.image[:, W // 2 :].mean()) == pytest.approx(50, abs=4)

        await server.stop()
        await wait_for(lambda: source.statistics()["stream"].state == "reconnecting")
        await server.start()  # same port, generation 2

        while True:  # frames of the first run may still be buffered: read on to the second
            frame = await anext(source)
            if float(frame.image[:, W // 2 :].mean()) > 75:
                break
        stats = source.statistics()["stream"]

    assert float(frame.image[:, W // 2 :].mean()) == pytest.approx(100, abs=4)
    assert frame.index > first.index  # the index counts on over the reconnection
    assert stats.reconnects >= 1
    assert source.reconnects == stats.reconnects


async def test_a_live_stream_lost_for_good_fails_naming_it(server: MjpegServer) -> None:
    retry = af.Retry(attempts=3, backoff=0.01, max_backoff=0.02)
    source = video_source(server.url, reconnect=retry, read_timeout=2)
    await anext(source)
    await server.stop()
    with pytest.raises(VideoSourceError) as info:
        async for _ in source:
            pass
    assert info.value.uri == server.url
    assert server.url in str(info.value)
    assert "3 reconnection attempts" in str(info.value)
    assert source.statistics()["stream"].state == "failed"


async def test_with_on_fail_end_a_stream_lost_for_good_ends_and_the_others_go_on(
    server: MjpegServer, clip: Path
) -> None:
    # Many cameras, one lost for good: with on_fail="end" it ends behind an EndOfKey of its
    # id (a keyed block ends its state), its "failed" event names the error, and the file
    # beside it is read to its last frame.
    events: list[video.StreamEvent] = []
    retry = af.Retry(attempts=2, backoff=0.01, max_backoff=0.02)
    source = video_source(
        {"cam": server.url, "dock": clip},
        reconnect=retry,
        read_timeout=2,
        on_fail="end",
        on_status=events.append,
    )
    items: list[Any] = []
    async for item in source:
        items.append(item)
        if len(items) == 1:
            await server.stop()
    ends = [i for i, item in enumerate(items) if isinstance(item, af.EndOfKey)]
    assert [items[i].key for i in ends] == ["cam"]
    cam = [i for i, item in enumerate(items) if isinstance(item, Frame) and item.stream == "cam"]
    assert cam
    assert max(cam) < ends[0]  # behind the camera's last frame
    dock = [item.index for item in items if isinstance(item, Frame) and item.stream == "dock"]
    assert dock == list(range(12))
    (failed,) = [e for e in events if e.state == "failed"]
    assert failed.stream == "cam"
    assert isinstance(failed.error, VideoSourceError)
    assert "2 reconnection attempts" in str(failed.error)
    assert source.statistics()["cam"].state == "failed"


async def test_with_on_fail_end_a_source_that_cannot_open_leaves_the_others_to_run(
    tmp_path: Path, clip: Path
) -> None:
    missing = tmp_path / "missing.avi"
    failed: list[video.StreamEvent] = []

    def note(event: video.StreamEvent) -> None:
        if event.state == "failed":
            failed.append(event)

    pipe = af.Pipeline(lambda f: (f.stream, f.index))
    out = await pipe.run(video_source([clip, missing], on_fail="end", on_status=note))
    assert out == [("clip", i) for i in range(12)]
    assert [(e.stream, e.error is not None and e.error.uri) for e in failed] == [
        ("missing", str(missing))
    ]
    # Every stream failed: the iteration ends with nothing; the events tell why.
    assert await pipe.run(video_source([missing], on_fail="end")) == []


# -- errors -----------------------------------------------------------------------------------


async def test_a_missing_file_fails_at_the_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    source = video_source(missing)
    with pytest.raises(VideoSourceError, match="no such file") as info:
        await anext(source)
    assert info.value.uri == str(missing)
    assert str(missing) in str(info.value)
    assert isinstance(info.value, af.AioflowError)
    with pytest.raises(StopAsyncIteration):  # failed is finished: nothing more, no threads
        await anext(source)


async def test_a_file_that_is_not_a_video_fails_naming_it(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoSourceError, match="cannot open") as info:
        async for _ in video_source(junk):
            pass
    assert info.value.uri == str(junk)


def cut_short(path: Path, keep: float) -> Path:
    """A copy of ``path`` with only the first ``keep`` of its bytes, as a crashed writer or an
    interrupted copy leaves it."""
    data = path.read_bytes()
    cut = path.with_name(f"{path.stem}_cut{path.suffix}")
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


async def test_a_truncated_file_delivers_what_it_can_then_warns_and_is_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # AVI/MJPG: every frame is a JPEG of its own and the index at the end is optional, so a
    # file cut short still opens and its first frames decode.
    whole = write_video(tmp_path / "whole.avi", 60, "MJPG")
    cut = cut_short(whole, 0.6)
    with caplog.at_level(logging.WARNING, logger="aioflow"):
        async with video_source([whole, cut]) as source:
            frames = [frame async for frame in source]
            stats = source.statistics()

    got = [f for f in frames if f.stream == "whole_cut"]
    n = len(got)
    assert 0 < n < 0.7 * 60
    assert [f.meta["frame_count"] for f in got[:1]] == [60]  # what the header declares
    # The frames that could be read came through, in order, with their content.
    assert [f.index for f in got] == list(range(n))
    for i, f in enumerate(got):
        assert grey_of(f.image) == pytest.approx(12 * (i % 14), abs=6), f"frame {i}"
    assert stats["whole_cut"].truncated
    assert stats["whole_cut"].state == "ended"
    assert stats["whole_cut"].read == stats["whole_cut"].emitted == n
    # The whole file, read beside it, is neither short nor flagged.
    assert len([f for f in frames if f.stream == "whole"]) == 60
    assert not stats["whole"].truncated

    [record] = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert record.name == "aioflow"
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert repr(str(cut)) in message
    assert f"after {n} of the 60 frames it declares" in message


async def test_a_truncated_file_that_cannot_open_fails_naming_it(tmp_path: Path) -> None:
    # MP4 keeps its index (the moov atom) at the end: cut short, nothing can be decoded, and
    # that is the clear error of a file that is not a video, not a silent empty stream.
    cut = cut_short(write_video(tmp_path / "clip.mp4", 60, "mp4v"), 0.6)
    with pytest.raises(VideoSourceError, match="cannot open") as info:
        async for _ in video_source(cut):
            pass
    assert info.value.uri == str(cut)


async def test_an_unreachable_url_fails_at_the_start_naming_it() -> None:
    with socket.socket() as sock:  # bound, not listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/stream.mjpg"
        with pytest.raises(VideoSourceError) as info:
            async for _ in video_source(url, open_timeout=2):
                pass
    assert info.value.uri == url
    assert url in str(info.value)


async def test_a_source_that_cannot_open_fails_the_pipeline_and_the_others_stop(
    tmp_path: Path, clip: Path
) -> None:
    pipe = af.Pipeline(lambda f: f.index)
    with pytest.raises(ExceptionGroup) as info:
        await pipe.run(video_source([clip, tmp_path / "missing.avi"]))
    (err,) = info.value.exceptions
    assert isinstance(err, af.BlockError)
    assert isinstance(err.__cause__, VideoSourceError)
    assert err.__cause__.uri == str(tmp_path / "missing.avi")


def test_bad_options_fail_at_once_naming_the_option(clip: Path) -> None:
    with pytest.raises(af.GraphError, match="'on_fail'"):
        video_source(clip, on_fail="skip")  # type: ignore[arg-type]
    with pytest.raises(af.GraphError, match="'buffer'"):
        video_source(clip, buffer=0)
    with pytest.raises(af.GraphError, match="'resize'"):
        video_source(clip, resize=(10, 0))
    with pytest.raises(af.GraphError, match="'stop'"):
        video_source(clip, start=5, stop=5)
    with pytest.raises(af.GraphError, match="no sources"):
        video_source([])
    with pytest.raises(af.GraphError, match="fourcc"):
        video.VideoWriter("out.mp4", fourcc="mp4")
    with pytest.raises(af.GraphError, match="quality"):
        video.jpeg_encode(quality=101)


# -- threads ----------------------------------------------------------------------------------


async def test_decoding_runs_in_reader_threads_not_on_the_event_loop(clip: Path) -> None:
    loop_thread = threading.get_ident()
    decoded_on: list[int] = []
    ticks = 0

    def profile(frame: types.FrameType, event: str, arg: object) -> None:
        if event == "c_call" and isinstance(getattr(arg, "__self__", None), cv2.VideoCapture):
            decoded_on.append(threading.get_ident())

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    threading.setprofile(profile)  # threads started from now on
    sys.setprofile(profile)  # this thread: the event loop's
    try:
        tick_task = asyncio.create_task(ticker())
        frames = []
        async with video_source(clip, buffer=1) as source:
            async for f in source:
                frames.append(f)
                await asyncio.sleep(0)
        tick_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tick_task
    finally:
        sys.setprofile(None)
        threading.setprofile(None)

    assert len(frames) == 12
    assert decoded_on, "the profiler saw no VideoCapture call"
    assert loop_thread not in decoded_on  # every grab/retrieve ran off the loop
    assert ticks >= 12  # and the loop kept turning while frames were decoded


async def test_no_thread_is_left_when_a_stream_is_left_early(tmp_path: Path) -> None:
    path = write_video(tmp_path / "long.avi", 60, "MJPG")
    pipe = af.Pipeline(af.block(executor="thread")(lambda f: f.index), name="early")
    seen = []
    async with contextlib.aclosing(pipe.stream(video_source(path))) as outputs:
        async for index in outputs:
            seen.append(index)
            if index == 5:
                break
    assert seen == list(range(6))
    assert aioflow_threads() == []


async def test_no_thread_is_left_when_a_live_pipeline_is_cancelled(server: MjpegServer) -> None:
    seen: list[int] = []

    @af.block
    async def note(frame: Frame) -> int:
        seen.append(frame.index)
        return frame.index

    pipe = af.Pipeline(note, name="live")
    task = asyncio.create_task(pipe.run(video_source(server.url, read_timeout=2)))
    await wait_for(lambda: len(seen) >= 5)
    assert any(t.startswith("aioflow-video") for t in aioflow_threads())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert aioflow_threads() == []


async def test_a_forgotten_source_warns_and_its_reader_stops(clip: Path) -> None:
    source = video_source(clip, buffer=1)
    await anext(source)
    assert aioflow_threads() == ["aioflow-video[clip]"]
    with pytest.warns(ResourceWarning, match="unclosed"):
        del source  # the last reference: collected here
    await wait_for(lambda: aioflow_threads() == [])


# -- pipelines --------------------------------------------------------------------------------


async def test_a_video_source_feeds_a_pipeline(clip: Path) -> None:
    @af.block(workers=2)
    def measure(frame: Frame) -> tuple[str, int, int]:  # runs in threads, in order
        return frame.stream, frame.index, square_x(frame.image)

    out = await af.Pipeline(measure, name="measure").run(video_source(clip))
    assert [(s, i) for s, i, _ in out] == [("clip", i) for i in range(12)]
    assert all(abs(x - 4 * i) <= 1 for _, i, x in out)


async def test_the_writer_makes_one_playable_file_per_stream(tmp_path: Path, clip: Path) -> None:
    other = write_video(tmp_path / "other.avi", 7, "MJPG")
    writer = video.VideoWriter(tmp_path / "out" / "{stream}.avi", fourcc="MJPG")
    out = await af.Pipeline(writer, name="write").run(video_source([clip, other]))

    assert len(out) == 19
    assert all(isinstance(f, Frame) for f in out)
    assert writer.paths == {s: tmp_path / "out" / f"{s}.avi" for s in ("clip", "other")}
    assert writer.written == {"clip": 12, "other": 7}
    assert count_frames(tmp_path / "out" / "clip.avi") == 12
    assert count_frames(tmp_path / "out" / "other.avi") == 7
    again = [f async for f in video_source(tmp_path / "out" / "clip.avi")]
    assert [abs(square_x(f.image) - 4 * f.index) <= 1 for f in again] == [True] * 12
    assert again[0].meta["fps"] == pytest.approx(FPS)  # the stream's rate was kept


async def test_the_writer_closes_a_stream_that_ends_and_numbers_its_return(
    tmp_path: Path,
) -> None:
    """A camera removed mid-run (``af.EndOfKey``) gets a complete file while the others go
    on, and no writer is held for it; back under the same name, it writes a new file."""
    writer = video.VideoWriter(tmp_path / "{stream}.avi", fourcc="MJPG", fps=FPS)
    gate = tmp_path / "gate.avi"

    def frame(stream: str, i: int) -> Frame:
        return Frame(picture(i), stream, i, i / FPS, {})

    async def cameras() -> AsyncIterator[Any]:
        for i in range(5):
            yield frame("gate", i)
            yield frame("hall", i)
        yield af.EndOfKey("gate")
        yield frame("hall", 5)
        # The run goes on, and the removed camera's file is already complete.
        await wait_for(lambda: count_frames(gate) == 5)
        for i in range(3):
            yield frame("gate", i)  # the camera is back, numbered from 0 again
            yield frame("hall", 6 + i)

    out = await af.Pipeline(writer, name="write").run(cameras())

    assert len(out) == 5 + 6 + 3 + 3
    assert writer.paths == {"gate": tmp_path / "gate-2.avi", "hall": tmp_path / "hall.avi"}
    assert writer.written == {"gate": 8, "hall": 9}
    assert count_frames(gate) == 5
    assert count_frames(tmp_path / "gate-2.avi") == 3
    assert count_frames(tmp_path / "hall.avi") == 9


async def test_the_writer_resizes_odd_frames_and_refuses_a_shared_file(
    tmp_path: Path, clip: Path
) -> None:
    @af.block
    def grow_some(frame: Frame) -> Frame:
        bigger = np.asarray(cv2.resize(frame.image, (W * 2, H * 2)), dtype=np.uint8)
        return frame.with_image(bigger) if frame.index else frame

    writer = video.VideoWriter(tmp_path / "sized.mp4", fps=5)
    await af.Pipeline(grow_some, writer).run(video_source(clip))
    cap = cv2.VideoCapture(str(tmp_path / "sized.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FPS)) == (W, 5)
    cap.release()
    assert count_frames(tmp_path / "sized.mp4") == 12

    shared = video.VideoWriter(tmp_path / "one.mp4", name="shared")
    with pytest.raises(ExceptionGroup) as info:
        await af.Pipeline(shared).run(video_source([clip, clip]))
    (err,) = info.value.exceptions
    assert isinstance(err.__cause__, video.VideoWriterError)
    assert "put {stream} in path_pattern" in str(err.__cause__)


def _files(folder: Path, pattern: str) -> list[Path]:
    """Every file under ``folder`` matching ``pattern``, at any depth."""
    return list(folder.rglob(pattern))


async def test_the_writer_keeps_every_stream_in_its_folder_whatever_its_id(
    tmp_path: Path,
) -> None:
    """Stream ids come from outside (a camera added by name over HTTP): one of ``../../x``
    wrote ``x.avi`` two folders up, one of ``a/b`` into a folder ``a``. Each id is made a
    plain file name: separators and control characters as ``_``, an id of dots only as
    underscores."""
    folder = tmp_path / "deep" / "out"
    writer = video.VideoWriter(folder / "{stream}.avi", fourcc="MJPG", fps=FPS)
    ids = ["../../escaped", "a/b", "..", "back\\slash", "nul\x00byte", "gate 7"]

    async def cameras() -> AsyncIterator[Any]:
        for i in range(3):
            for stream in ids:
                yield Frame(picture(i), stream, i, i / FPS, {})

    await af.Pipeline(writer, name="write").run(cameras())

    written = [p.relative_to(tmp_path) for p in _files(tmp_path, "*.avi")]
    names = [".._.._escaped", "a_b", "__", "back_slash", "nul_byte", "gate 7"]
    assert sorted(written) == sorted(Path("deep", "out", f"{n}.avi") for n in names)
    files = [f"{n}.avi" for n in names]
    assert writer.written == dict.fromkeys(ids, 3)
    assert all(count_frames(folder / name) == 3 for name in files)


async def test_jpeg_encode_makes_bytes_that_decode_to_the_frame(clip: Path) -> None:
    pipe = af.Pipeline(video.jpeg_encode(quality=95), name="jpeg")
    blobs = await pipe.run(video_source(clip, resize=(40, 30)))
    assert len(blobs) == 12
    assert all(isinstance(b, bytes) and b[:2] == b"\xff\xd8" for b in blobs)
    for i, blob in enumerate(blobs):
        image = video.decode_jpeg(blob)
        assert image.shape == (30, 40, 3)
        expected = cv2.resize(picture(i), (40, 30), interpolation=cv2.INTER_AREA)
        assert float(np.abs(image.astype(int) - expected.astype(int)).mean()) < 8
    raw = video.encode_jpeg(picture(3), quality=50)  # arrays too
    assert video.decode_jpeg(raw).shape == (H, W, 3)


# -- drawing and frames -----------------------------------------------------------------------


def test_draw_boxes_colours_the_outline_on_a_copy() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    red, blue = [0, 0, 255], [255, 0, 0]
    boxes = [(10, 10, 30, 25), (40.4, 30, 55, 38)]
    out = video.draw_boxes(image, boxes, color=[(0, 0, 255), (255, 0, 0)])

    assert image.max() == 0  # the input is untouched
    assert out[10, 20].tolist() == red
    assert out[25, 15].tolist() == red
    assert out[17, 10].tolist() == red
    assert out[17, 30].tolist() == red
    assert out[17, 20].tolist() == [0, 0, 0]  # the inside stays
    assert out[34, 40].tolist() == blue  # 40.4 rounds to 40
    assert out[5, 5].tolist() == [0, 0, 0]  # outside stays


def test_draw_boxes_labels_and_in_place_drawing() -> None:
    image = np.zeros((80, 80, 3), np.uint8)
    out = video.draw_boxes(image, np.array([[20, 40, 60, 70]]), ["car"], copy=False)
    assert out is image
    tag = image[20:40, 20:60]  # the label's tag sits above the box, in the box colour
    assert (tag == [0, 255, 0]).all(axis=2).mean() > 0.3
    assert (tag != [0, 255, 0]).any()  # and has the text on it
    with pytest.raises(ValueError, match="2 labels"):
        video.draw_boxes(image, [(0, 0, 5, 5)], ["a", "b"])
    with pytest.raises(ValueError, match="uint8"):
        video.draw_boxes(image.astype(np.float32), [(0, 0, 5, 5)])


def test_draw_text_writes_on_a_background_box() -> None:
    image = np.full((30, 100, 3), 128, np.uint8)
    out = video.draw_text(image, "hello", (5, 5), color=(0, 0, 255), background=(0, 0, 0))
    assert (image == 128).all()
    box = out[5:20, 5:50]
    assert (box == [0, 0, 0]).all(axis=2).any()
    assert (box[..., 2] > 150).any()
    assert (out[25:, 60:] == 128).all()  # away from the text nothing changed


def test_frames_are_frozen_records_that_copy_and_pickle() -> None:
    frame = Frame(picture(1), "cam", 3, 0.3, {"fps": 10.0})
    with pytest.raises(AttributeError):
        frame.index = 4  # type: ignore[misc]
    smaller = frame.with_image(picture(2)[:10])
    assert (smaller.height, smaller.width, smaller.index) == (10, W, 3)
    assert frame.replace(stream="other").stream == "other"
    assert frame.stream == "cam"
    back = pickle.loads(pickle.dumps(frame))
    assert np.array_equal(back.image, frame.image)
    assert back.meta == {"fps": 10.0}
    err = pickle.loads(pickle.dumps(VideoSourceError("rtsp://cam", "cam", "lost")))
    assert (err.uri, err.stream, err.reason) == ("rtsp://cam", "cam", "lost")


def test_stream_ids_and_liveness_follow_the_uri(tmp_path: Path) -> None:
    def info(src: Any) -> list[tuple[str, bool]]:
        s = video_source(src)
        return [(k, v.live) for k, v in s.statistics().items()]

    assert info("rtsp://10.0.0.5:554/live") == [("live", True)]
    assert info(["http://h/a/cam.mjpg", "https://h/"]) == [("cam", True), ("h", True)]
    assert info(0) == [("camera0", True)]
    assert info("1") == [("camera1", True)]
    assert info(tmp_path / "x y.mp4") == [("x_y", False)]
    assert info({"door": "rtsp://x/1"}) == [("door", True)]
    assert video_source("rtsp://x/1", live=False).statistics()["1"].live is False
    assert video_source(tmp_path / "a.mp4", live=True).statistics()["a"].live is True
