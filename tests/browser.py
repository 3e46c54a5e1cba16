"""A minimal headless-Chromium driver for tests: the DevTools protocol over --remote-debugging-pipe.

No extra Python package: Chromium reads commands on fd 3 and writes replies and events on fd 4,
each message JSON terminated by a NUL byte. `load_page` opens a file, waits for the load event and
returns what a person would check by hand: console errors, uncaught exceptions, failed resources,
every URL requested, the value of a JS expression and a full-page PNG screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """Path of a Chromium / Chrome executable on PATH (or $PALRM_CHROMIUM), else None."""
    explicit = os.environ.get("PALRM_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    requests: list[str] = field(default_factory=list)  # every URL the page requested
    value: object = None  # the result of `expression`
    screenshot: bytes = b""  # full-page PNG


class _Pipe:
    def __init__(self, exe: str, profile: str) -> None:
        to_chrome_r, self._write_fd = os.pipe()
        self._read_fd, from_chrome_w = os.pipe()
        keep_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 100)
        keep_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 100)

        def child_fds() -> None:  # runs in the child before exec: Chromium expects fds 3 and 4
            os.dup2(keep_r, 3)
            os.dup2(keep_w, 4)

        args = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(args, pass_fds=(3, 4), preexec_fn=child_fds, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_chrome_r, from_chrome_w, keep_r, keep_w):
            os.close(fd)
        self.events: queue.Queue = queue.Queue()
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._next = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._read_fd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._cond.notify_all()
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self._next += 1
        msg = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._write_fd, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._next not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError(f"chromium did not answer {method} (exit code {self.proc.poll()})")
                self._cond.wait(left)
            reply = self._replies.pop(self._next)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - the browser may already be gone
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._write_fd, self._read_fd):
            try:
                os.close(fd)
            except OSError:
                pass


def load_page(exe: str, path: str | os.PathLike, *, expression: str = "null", width: int = 1100, timeout: float = 60) -> PageResult:
    """Open `path` in headless Chromium and collect errors, requests, `expression`'s value and a screenshot."""
    result = PageResult()
    with tempfile.TemporaryDirectory(prefix="palrm-chromium-") as profile:
        pipe = _Pipe(exe, profile)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session=session)
            pipe.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1,
                                                             "mobile": False}, session=session)
            pipe.call("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
            deadline = time.monotonic() + timeout
            loaded = False
            while not loaded:
                try:
                    event = pipe.events.get(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    raise RuntimeError(f"{path}: no load event within {timeout} s") from None
                loaded = _record(event, result, session) or loaded
            result.value = pipe.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                     session=session)["result"].get("value")
            size = pipe.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
            shot = pipe.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                        "clip": {"x": 0, "y": 0, "width": size["width"],
                                                                 "height": size["height"], "scale": 1}}, session=session)
            result.screenshot = base64.b64decode(shot["data"])
            while not pipe.events.empty():  # anything logged after the load event
                _record(pipe.events.get_nowait(), result, session)
        finally:
            pipe.close()
    return result


def _record(event: dict, result: PageResult, session: str) -> bool:
    """File one DevTools event into `result`; True for the page's load event."""
    if event.get("sessionId") != session:
        return False
    method, params = event["method"], event.get("params", {})
    if method == "Page.loadEventFired":
        return True
    if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
        result.errors.append("console." + params["type"] + ": " + " ".join(str(a.get("value", a.get("description")))
                                                                         for a in params.get("args", [])))
    elif method == "Runtime.exceptionThrown":
        details = params.get("exceptionDetails", {})
        result.errors.append("exception: " + str(details.get("exception", {}).get("description") or details.get("text")))
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        entry = params["entry"]
        result.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())
    elif method == "Network.requestWillBeSent":
        result.requests.append(params.get("request", {}).get("url", ""))
    elif method == "Network.loadingFailed":
        result.errors.append(f"failed to load: {params.get('errorText')}")
    return False
