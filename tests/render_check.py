"""Render an HTML file in headless Chromium and report what went wrong, over the DevTools protocol (stdlib only).

The protocol runs over a pipe (`--remote-debugging-pipe`: Chromium reads commands from fd 3 and writes
replies and events to fd 4, NUL-separated JSON), so no port, no websocket package and nothing injected
into the page. Checked: console errors, uncaught exceptions, Log errors, failed loads, any request that
is not file:// or data: (the report must open offline), and every <img> decoded (naturalWidth > 0).

    python tests/render_check.py EVAL/report.html [screenshot.png]
"""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class RenderResult:
    images: list[dict] = field(default_factory=list)  # {"src", "complete", "width"} per <img>
    errors: list[str] = field(default_factory=list)  # console/exception/log/network problems, one line each
    screenshot: Path | None = None

    @property
    def broken_images(self) -> list[dict]:
        return [i for i in self.images if not i["complete"] or i["width"] <= 0]


class _Pipe:
    """A DevTools connection over Chromium's fd 3/4 pipe."""

    def __init__(self, binary: str, user_data_dir: str):
        to_chrome_r, self._to_chrome_w = os.pipe()
        self._from_chrome_r, from_chrome_w = os.pipe()

        def wire_fds():  # runs in the child before exec: Chromium expects the pipe exactly on fds 3 and 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(3, 4), preexec_fn=wire_fds)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr), daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._from_chrome_r, "rb", buffering=0) as f:
            while chunk := f.read(65536):
                buffer += chunk
                *complete, buffer = buffer.split(b"\0")
                for raw in complete:
                    self._messages.put(json.loads(raw))
        self._messages.put(None)  # Chromium went away

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_chrome_w, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self._next_id, timeout, f"reply to {method}")
        if "error" in reply:
            raise RuntimeError(f"{method} failed: {reply['error']}")
        return reply.get("result", {})

    def wait(self, match, timeout: float, what: str) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                message = self._messages.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no {what} from Chromium within {timeout:.0f} s") from None
            if message is None:
                tail = b"".join(self._stderr)[-2000:].decode(errors="replace")
                raise RuntimeError(f"Chromium exited while waiting for {what}; stderr tail:\n{tail}")
            if "method" in message:
                self.events.append(message)
            if match(message):
                return message

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_chrome_w)


IMAGES_JS = ("JSON.stringify(Array.from(document.images, i => "
             "({src: i.getAttribute('src'), complete: i.complete, width: i.naturalWidth})))")


def render(page: Path, screenshot: Path | None = None, *, binary: str | None = None,
           width: int = 1400, timeout: float = 60.0) -> RenderResult:
    binary = binary or find_chromium()
    if binary is None:
        raise FileNotFoundError("no Chromium found (apt-get install chromium)")
    url = Path(page).resolve().as_uri()
    result = RenderResult()
    with tempfile.TemporaryDirectory(prefix="render-check-") as profile:
        chrome = _Pipe(binary, profile)
        try:
            target = chrome.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                chrome.send(f"{domain}.enable", session=session)
            chrome.send("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            chrome.send("Page.navigate", {"url": url}, session=session)
            chrome.wait(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session,
                        timeout, "page load")
            value = chrome.send("Runtime.evaluate", {"expression": IMAGES_JS, "returnByValue": True},
                                session=session)["result"]["value"]
            result.images = json.loads(value)
            if screenshot is not None:
                size = chrome.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
                shot = chrome.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}},
                    session=session, timeout=timeout)
                screenshot = Path(screenshot)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                result.screenshot = screenshot
        finally:
            chrome.close()
        result.errors = _problems(chrome.events)
    return result


def _problems(events: list[dict]) -> list[str]:
    problems = []
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            problems.append(f"console.{params['type']}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            problems.append(f"log error: {entry.get('text')} {entry.get('url', '')}".rstrip())
        elif method == "Network.loadingFailed":
            problems.append(f"load failed: {params.get('errorText')} (request {params.get('requestId')})")
        elif method == "Network.requestWillBeSent":
            request_url = params.get("request", {}).get("url", "")
            if not request_url.startswith(("file:", "data:", "about:")):
                problems.append(f"network request: {request_url}")
    return problems


if __name__ == "__main__":
    outcome = render(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(f"{len(outcome.images)} images, {len(outcome.broken_images)} broken, {len(outcome.errors)} errors")
    for line in outcome.errors + [f"broken image: {i['src']}" for i in outcome.broken_images]:
        print(line)
    sys.exit(1 if outcome.errors or outcome.broken_images else 0)
