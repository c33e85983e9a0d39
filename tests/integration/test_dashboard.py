"""The live dashboard in a real headless browser (Debian's chromium, driven over the Chrome
DevTools protocol): the page shows the running pipeline's blocks and their numbers change."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import aioflow as af
from aioflow.observe import Server, snapshot

pytestmark = pytest.mark.integration

STATIC = Path(af.__file__).parent / "observe" / "static"
#: set to a folder to keep the screenshot (the docs' image is made this way)
SCREENSHOT_DIR = os.environ.get("AIOFLOW_SCREENSHOT_DIR")


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "chromium is missing: scripts/with-services installs Debian's chromium"
    return path


class DevTools:
    """A page of a headless chromium, over the DevTools protocol's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_json({"id": n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json(timeout=20)
            if msg.get("id") == n:
                assert "error" not in msg, msg
                result: dict[str, Any] = msg["result"]
                return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def browser(url: str, profile: Path) -> AsyncIterator[DevTools]:
    proc = await asyncio.create_subprocess_exec(
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-default-apps",
        "--disable-extensions",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "--window-size=1280,720",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        endpoint = None
        async with asyncio.timeout(30):
            while endpoint is None:
                line = (await proc.stderr.readline()).decode()
                assert line, "chromium exited before it listened"
                found = re.search(r"DevTools listening on (ws://\S+)", line)
                if found:
                    endpoint = found.group(1)
        drain = asyncio.create_task(proc.stderr.read())  # keep its pipe from filling
        port = endpoint.split("/")[2]
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                page = None
                while page is None:
                    async with http.get(f"http://{port}/json/list") as resp:
                        targets = await resp.json()
                    page = next((t for t in targets if t["type"] == "page"), None)
                    if page is None:
                        await asyncio.sleep(0.1)
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                yield DevTools(ws)
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def until(tools: DevTools, expression: str, what: str) -> Any:
    async with asyncio.timeout(20):
        while not (value := await tools.evaluate(expression)):
            await asyncio.sleep(0.1)
    assert value, what
    return value


def figures(name: str) -> str:
    return (
        "(() => { const el = document.querySelector('[data-block=\"" + name + "\"]');"
        " if (!el) return null;"
        " const f = {}; for (const dd of el.querySelectorAll('dd')) f[dd.className] ="
        " dd.textContent; return f; })()"
    )


async def test_the_dashboard_shows_the_blocks_and_their_numbers_change(tmp_path: Path) -> None:
    @af.block(workers=4)
    async def fetch(x: int) -> int:
        await asyncio.sleep(0.004)
        return x

    @af.block(workers=2)
    def resize(x: int) -> int:
        return x

    @af.block
    async def detect(x: int) -> int:
        await asyncio.sleep(0.003)
        return x

    @af.block(overflow="drop_oldest", queue_size=8)
    async def upload(x: int) -> int:
        return x

    pipe = af.Pipeline(fetch, resize, detect, upload, name="cameras")
    stop = asyncio.Event()

    async def frames() -> AsyncIterator[int]:
        for i in itertools.count():
            if stop.is_set():
                return
            yield i

    run = asyncio.create_task(pipe.run(frames()))
    try:
        # The server reads the pipeline's current run: pipe.run() here, no open() needed.
        async with (
            Server(pipe) as server,
            browser(server.url + "?interval=0.2", tmp_path / "profile") as tools,
        ):
            await until(
                tools,
                "document.querySelectorAll('[data-block]').length === 4",
                "the four blocks are drawn",
            )
            names = await tools.evaluate(
                "[...document.querySelectorAll('[data-block]')].map(e => e.dataset.block)"
            )
            assert names == ["fetch", "resize", "detect", "upload"]
            first = await until(
                tools,
                figures("detect") + "?.received !== '0' && " + figures("detect"),
                "detect's figures",
            )
            await asyncio.sleep(1.0)
            second = await tools.evaluate(figures("detect"))
            assert int(second["received"]) > int(first["received"]), (first, second)
            assert second["throughput"] != "\u2013"
            assert float(second["utilisation"].rstrip("%")) > 0
            banner = await tools.evaluate("document.getElementById('bottleneck').textContent")
            assert banner.startswith("Bottleneck: "), banner
            await until(
                tools,
                "document.getElementById('sparkpath').getAttribute('points').split(' ').length > 3",
                "the sparkline has points",
            )
            e2e = await tools.evaluate("document.getElementById('e2e').textContent")
            assert e2e.startswith("\u2264 "), e2e  # the end-to-end p99's bucket bound
            status = await tools.evaluate("document.getElementById('status').textContent")
            assert status == "live"
            shot = await tools.call("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG")
        for folder in (tmp_path, SCREENSHOT_DIR):
            if folder:
                await asyncio.to_thread(Path(folder, "dashboard.png").write_bytes, png)
    finally:
        stop.set()
        await run


def test_the_page_reaches_nothing_but_its_own_server() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert "://" not in text, path.name  # no CDN, no absolute URL: it works offline


async def test_the_event_stream_sends_snapshots_of_the_statistics() -> None:
    pipe = af.Pipeline(lambda x: x + 1, name="snap")
    async with pipe.open() as running:
        assert await running.submit(1) == 2
        async with (
            Server(running) as server,
            aiohttp.ClientSession() as http,
            http.get(server.url + "events?interval=0.05") as resp,
        ):
            assert resp.headers["Content-Type"] == "text/event-stream"
            first = json.loads((await resp.content.readline()).decode().removeprefix("data: "))
    assert first["pipeline"] == "snap"
    assert first["latency"]["count"] == 1  # the one output, end to end
    assert 0 < first["latency"]["p99_s"] <= 30.0
    [block] = first["blocks"]
    assert block["received"] == 1
    assert block == json.loads(json.dumps(snapshot(running)["blocks"][0])) | {
        "wall_s": block["wall_s"],
        "utilisation": block["utilisation"],
        "busy_s": block["busy_s"],
    }
