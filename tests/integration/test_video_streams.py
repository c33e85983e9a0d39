"""``video_source`` with streams that come and go while a pipeline runs, and their status events.

Real video throughout: files written with OpenCV into ``tmp_path`` (read live, so they play at
their own speed like cameras, or as files), folders of PNG images, and an MJPEG stream from a real
aiohttp server on 127.0.0.1 that can fall silent. What is checked is what a service sees: the
frames of each stream (indices from 0, in order), a keyed block's state ended for a removed
stream, the events and their figures, the errors, and no reader thread left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web

import aioflow as af
from aioflow.io.video import Frame, StreamEvent, VideoSourceError, video_source

pytestmark = pytest.mark.integration

W, H = 64, 48


def picture(i: int) -> np.ndarray:
    img = np.full((H, W, 3), (12 * i) % 200, np.uint8)
    img[20:28, 4 * (i % 14) : 4 * (i % 14) + 8] = 255
    return img


def write_video(path: Path, n: int, fps: float) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(picture(i))
    writer.release()
    return path


def write_folder(path: Path, n: int) -> Path:
    path.mkdir()
    for i in range(n):
        assert cv2.imwrite(str(path / f"img{i}.png"), picture(i))
    return path


def reader_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("aioflow-video")]


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    yield
    assert reader_threads() == []


async def wait_for(condition: Callable[[], bool]) -> None:
    """Poll until true (the per-test timeout bounds it)."""
    while not condition():
        await asyncio.sleep(0.005)


class Tracker(af.Block):
    """Per stream: the frame indices it saw; evict() flushes ("end", stream, indices)."""

    key = staticmethod(lambda frame: frame.stream)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.evicted: list[Hashable] = []

    def create_state(self, stream: Hashable) -> list[int]:
        return []

    async def process(self, frame: Frame, state: list[int]) -> tuple[str, int]:
        state.append(frame.index)
        return (frame.stream, frame.index)

    async def evict(self, stream: Hashable, state: list[int]) -> list[Any]:
        self.evicted.append(stream)
        return [("end", stream, list(state))]


@pytest.fixture
def camera_file(tmp_path: Path) -> Path:
    """A file that, read live, plays for 20 s at 50 frames/s: an endless camera for a test."""
    return write_video(tmp_path / "camera.avi", 1000, fps=50.0)


async def test_streams_are_added_and_removed_while_a_pipeline_runs(
    tmp_path: Path, camera_file: Path
) -> None:
    folder = write_folder(tmp_path / "shots", 6)
    source = video_source({"gate": camera_file}, live=True, buffer=1000)  # (drops none)
    tracker = Tracker()
    pipe = af.Pipeline(tracker, name="cameras")
    outs: list[Any] = []
    phase = 0
    async with contextlib.aclosing(pipe.stream(source)) as results:
        async for out in results:
            outs.append(out)
            if phase == 0 and out == ("gate", 3):
                phase = 1
                assert await source.add(camera_file, name="hall") == "hall"
                assert source.streams == ("gate", "hall")
            elif phase == 1 and out == ("hall", 4):
                phase = 2
                stats = await source.remove("gate")  # the pipeline goes on meanwhile
                assert stats.state == "removed"
                assert stats.emitted >= 4
                assert source.streams == ("hall",)
            elif phase == 2 and out[:2] == ("end", "gate"):
                phase = 3
                # A stream re-added under its name starts afresh (index 0, new state).
                await source.add(camera_file, name="gate")
            elif phase == 3 and out == ("gate", 4):
                phase = 4
                await source.add(folder, name="shots", live=False)
            elif phase == 4 and out == ("shots", 5):
                phase = 5
                await source.remove("hall")
                await source.remove("gate")
            elif phase == 5 and sum(o[0] == "end" for o in outs) == 3:
                phase = 6
                source.close()  # the iteration ends; the pipeline finishes as at a file's end
    assert phase == 6

    ends = [o for o in outs if o[0] == "end"]
    first_gate = next(o for o in ends if o[1] == "gate")
    cut = outs.index(first_gate)
    gate_before = [o[1] for o in outs[:cut] if o[0] == "gate"]
    assert first_gate[2] == gate_before == list(range(len(gate_before)))  # flushed after its last
    gate_after = [o[1] for o in outs[cut:] if o[0] == "gate"]
    assert gate_after[:5] == [0, 1, 2, 3, 4]  # afresh: new reader, index from 0
    hall = [o[1] for o in outs if o[0] == "hall"]
    assert hall == list(range(len(hall)))
    assert [o[1] for o in outs if o[0] == "shots"] == list(range(6))
    # Every stream's state was flushed once per life: gate twice, hall once, and the folder
    # (ended by itself, never removed) when the run ended.
    assert sorted(map(str, tracker.evicted)) == ["gate", "gate", "hall", "shots"]
    rec = pipe.statistics()["Tracker"]
    assert rec.keys == 0
    assert rec.received == len(outs) - len(ends)
    assert reader_threads() == []


async def test_a_removed_streams_reader_and_capture_are_released_at_once(
    camera_file: Path,
) -> None:
    source = video_source([camera_file, camera_file], live=True)
    async with source:
        frames = [await anext(source) for _ in range(6)]
        assert {f.stream for f in frames} == {"camera", "camera-2"}
        assert sorted(reader_threads()) == ["aioflow-video[camera-2]", "aioflow-video[camera]"]
        await source.remove("camera")
        assert reader_threads() == ["aioflow-video[camera-2]"]  # joined when remove returns
        items = [await anext(source) for _ in range(12)]
        marker = [i for i in items if isinstance(i, af.EndOfKey)]
        assert marker == [af.EndOfKey("camera")]  # iterated by hand, the marker shows
        after = items[items.index(marker[0]) + 1 :]
        assert {f.stream for f in after} == {"camera-2"}
        assert list(source.statistics()) == ["camera-2"]
    assert reader_threads() == []


async def test_a_source_with_every_stream_removed_waits_for_new_ones(
    tmp_path: Path, camera_file: Path
) -> None:
    clip = write_video(tmp_path / "clip.avi", 5, fps=10.0)
    source = video_source({"a": camera_file}, live=True, buffer=1000)
    pipe = af.Pipeline(lambda frame: (frame.stream, frame.index), name="p")
    got: list[tuple[str, int]] = []
    async with contextlib.aclosing(pipe.stream(source)) as results:
        async for out in results:
            got.append(out)
            if out == ("a", 2):
                await source.remove("a")
                assert source.streams == ()
                # Nothing left: the iteration waits, it does not end; a new stream goes on.
                await source.add(clip, name="b", live=False)
    # b is a file: once it ended (and it is the only stream), the iteration ended by itself.
    assert got[-5:] == [("b", i) for i in range(5)]
    assert [o for o in got if o[0] == "a"] == [("a", 0), ("a", 1), ("a", 2)]


async def test_close_ends_a_live_iteration_from_another_task(camera_file: Path) -> None:
    source = video_source(camera_file, live=True, buffer=1000)
    pipe = af.Pipeline(lambda frame: frame.index)
    task = asyncio.create_task(pipe.run(source))
    await wait_for(lambda: source.statistics()["camera"].emitted >= 3)
    source.close()
    out = await task
    assert out[:3] == [0, 1, 2]
    assert source.statistics()["camera"].state == "closed"


async def test_add_fails_for_a_bad_or_duplicate_stream_and_the_others_go_on(
    tmp_path: Path, camera_file: Path
) -> None:
    source = video_source({"a": camera_file}, live=True)
    async with source:
        assert (await anext(source)).stream == "a"
        with pytest.raises(VideoSourceError, match="no such file") as info:
            await source.add(tmp_path / "missing.mp4", name="ghost")
        assert info.value.stream == "ghost"
        with pytest.raises(ValueError, match="already a stream 'a'"):
            await source.add(camera_file, name="a")
        with pytest.raises(ValueError, match="no stream 'ghost'"):
            await source.remove("ghost")
        with pytest.raises(af.GraphError, match="a path, a URL or a camera index"):
            await source.add(3.5, name="x")  # type: ignore[arg-type]
        assert source.streams == ("a",)
        assert (await anext(source)).stream == "a"  # the iteration never heard of "ghost"
    with pytest.raises(VideoSourceError, match="closed"):
        await source.add(camera_file, name="late")


async def test_status_events_tell_each_streams_states_with_live_figures(
    tmp_path: Path, camera_file: Path
) -> None:
    clip = write_video(tmp_path / "clip.avi", 8, fps=100.0)  # ends long before 30 of cam
    called: list[StreamEvent] = []
    source = video_source({"cam": camera_file, "clip": clip}, live=True, on_status=called.append)
    events = source.events()
    seen: list[StreamEvent] = []

    async def listen() -> None:
        async for event in events:
            seen.append(event)

    listener = asyncio.create_task(listen())
    frames: list[Frame] = []
    async with source:
        async for frame in source:
            frames.append(frame)
            if sum(f.stream == "cam" for f in frames) == 30:
                break
        cam = source.statistics()["cam"]
        assert cam.fps_read > 10
        assert cam.fps_emitted > 10
        assert cam.frame_age is not None
        assert cam.frame_age < 5
        await source.remove("cam")
    await listener  # the events end once the source is closed

    assert [(e.stream, e.state) for e in seen] == [(e.stream, e.state) for e in called]
    by_stream = {name: [e.state for e in seen if e.stream == name] for name in ("cam", "clip")}
    assert by_stream["cam"] == ["opening", "running", "removed"]
    assert by_stream["clip"] == ["opening", "running", "ended"]
    ended = next(e for e in seen if e.state == "ended")
    assert ended.previous == "running"
    assert ended.error is None
    assert ended.statistics.read == 8
    assert ended.statistics.state == "ended"
    removed = next(e for e in seen if e.state == "removed")
    assert removed.statistics.emitted == 30
    assert removed.statistics.live


async def test_an_added_stream_that_cannot_open_tells_failed(
    tmp_path: Path, camera_file: Path
) -> None:
    bad = tmp_path / "not-a-video.avi"
    bad.write_bytes(b"this is not a video" * 100)
    source = video_source({"a": camera_file}, live=True)
    events = source.events()
    async with source:
        await anext(source)
        with pytest.raises(VideoSourceError, match="cannot open it"):
            await source.add(bad, name="bad")
    states = [(e.stream, e.state) async for e in events]
    assert states == [
        ("a", "opening"),
        ("a", "running"),
        ("bad", "opening"),
        ("bad", "failed"),
        ("a", "closed"),
    ]
    assert [e async for e in source.events()] == []  # a closed source has nothing more to tell


# -- the watchdog ----------------------------------------------------------------------------


class SilentCamera:
    """An MJPEG stream on loopback that falls silent (connection open, no frames) on cue."""

    def __init__(self) -> None:
        self.talking = asyncio.Event()
        self.talking.set()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/cam.mjpg", self.stream)
        self.runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "multipart/x-mixed-replace; boundary=frame"}
        )
        await resp.prepare(request)
        ok, buf = cv2.imencode(".jpg", picture(3))
        assert ok
        data = buf.tobytes()
        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data)
        with contextlib.suppress(ConnectionError):
            while True:
                await self.talking.wait()
                await resp.write(head + data + b"\r\n")
                await asyncio.sleep(0.01)
        return resp  # pragma: no cover - ends when the client goes

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def silent_camera() -> AsyncIterator[SilentCamera]:
    cam = SilentCamera()
    await cam.start()
    try:
        yield cam
    finally:
        cam.talking.set()
        await cam.stop()


async def test_a_camera_that_falls_silent_turns_stalled_then_running_again(
    silent_camera: SilentCamera,
) -> None:
    url = f"http://127.0.0.1:{silent_camera.port}/cam.mjpg"
    states: list[str] = []
    source = video_source({"door": url}, stall_after=0.3, read_timeout=30.0)
    events = source.events()
    async with source:
        await anext(source)
        silent_camera.talking.clear()
        async for event in events:
            states.append(event.state)
            if event.state == "stalled":
                assert event.previous == "running"
                assert event.statistics.frame_age is not None
                assert event.statistics.frame_age >= 0.3
                silent_camera.talking.set()  # it talks again: the next frame clears it
            elif event.state == "running" and "stalled" in states:
                break
    # (live: the newest frame is kept and older ones dropped, so the reader never waits on us)
    assert states[-2:] == ["stalled", "running"]
    assert "reconnecting" not in states


def test_bad_watchdog_and_callback_options_fail_at_once(camera_file: Path) -> None:
    with pytest.raises(af.GraphError, match="'stall_after' must be a number > 0"):
        video_source(camera_file, stall_after=0)
    with pytest.raises(af.GraphError, match="'on_status' must be None or a callable"):
        video_source(camera_file, on_status="print")  # type: ignore[arg-type]


async def test_a_failing_status_callback_is_logged_and_the_stream_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clip = write_video(tmp_path / "clip.avi", 6, fps=10.0)

    def broken(event: StreamEvent) -> None:
        raise RuntimeError(f"cannot page anyone about {event.state}")

    source = video_source(clip, on_status=broken)
    with caplog.at_level("ERROR", logger="aioflow"):
        frames = await af.Pipeline(lambda frame: frame.index).run(source)
    assert frames == list(range(6))
    failures = [r for r in caplog.records if "on_status callback failed" in r.getMessage()]
    assert [r.exc_info[1].args[0] for r in failures if r.exc_info and r.exc_info[1]] == [
        "cannot page anyone about opening",
        "cannot page anyone about running",
        "cannot page anyone about ended",
    ]
