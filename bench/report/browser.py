"""A tiny headless-Chromium driver for checking and screenshotting a static page, with no Python dependency.

It speaks Chromium's DevTools protocol over ``--remote-debugging-pipe``: the browser reads commands from its
file descriptor 3 and writes replies and events to its file descriptor 4, each message JSON ended by a NUL
byte. ``/bin/sh`` moves our two pipes (its stdin and stdout) onto those descriptors, so no code runs between
fork and exec. Every wait has a deadline, and the browser's whole process group is killed on close::

    with Browser() as b:
        b.open(Path("report/index.html").resolve().as_uri(), width=1280)
        b.evaluate("document.title"), b.errors, b.screenshot(Path("page.png"))

``errors`` collects what a developer console shows as errors: console.error calls (Runtime.consoleAPICalled),
uncaught exceptions (Runtime.exceptionThrown) and browser log errors (Log.entryAdded level error: failed
resource loads, blocked requests). ``requests`` lists every URL the page asked for (Network.requestWillBeSent).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.record import atomic_write_bytes

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio", "--remote-debugging-pipe",
)  # fmt: skip
"""Background networking, component updates and sync off: a closed network refuses their connections."""
INSTALL_HINT = "install Chromium (Debian/Ubuntu: `apt-get install chromium`) or put `chromium` on PATH"


class BrowserError(RuntimeError):
    """Chromium is missing, did not answer in time, or a command failed; the message says which."""


class BrowserMissingError(BrowserError):
    pass


def find_chromium() -> str | None:
    """The Chromium executable: $BENCH_CHROMIUM, else the first of CANDIDATES found."""
    forced = os.environ.get("BENCH_CHROMIUM")
    if forced:
        return shutil.which(forced)
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


class Browser:
    """One headless Chromium with one page; a context manager that always kills the browser."""

    def __init__(self, executable: str | None = None, timeout: float = 60.0) -> None:
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserMissingError(f"Chromium was not found ({', '.join(CANDIDATES)}); {INSTALL_HINT}")
        self.timeout = timeout
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.session = ""
        self.next_id = 0
        self.buffer = b""
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Browser:
        self.profile = tempfile.mkdtemp(prefix="bench-chromium-")
        self.log = tempfile.TemporaryFile()
        commands_r, self.commands_w = os.pipe()
        self.replies_r, replies_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                ["/bin/sh", "-c", 'exec "$0" "$@" 3<&0 4>&1 </dev/null >/dev/null', self.executable,
                 *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                stdin=commands_r, stdout=replies_w, stderr=self.log, start_new_session=True,
            )  # fmt: skip
        except OSError as err:
            self.close()
            raise BrowserError(f"cannot start {self.executable}: {err}") from None
        finally:
            os.close(commands_r)
            os.close(replies_w)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Ask the browser to quit, then kill its process group; remove the temporary profile."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.send("Browser.close", session=False)
                self.proc.wait(timeout=5)
            except (BrowserError, OSError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        for fd in (getattr(self, "commands_w", None), getattr(self, "replies_r", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.commands_w = self.replies_r = None
        shutil.rmtree(getattr(self, "profile", ""), ignore_errors=True)

    def stderr_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode("utf-8", "replace").strip()[-600:]

    def send(self, method: str, params: dict | None = None, session: bool = True) -> int:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self.commands_w, data) :]
        except OSError as err:  # the browser has gone (broken pipe)
            raise BrowserError(f"Chromium stopped reading commands ({err}): {self.stderr_tail()}") from None
        return self.next_id

    def receive(self, deadline: float) -> dict:
        """The next message, or BrowserError at the deadline or when the browser has exited."""
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"Chromium did not answer within {self.timeout:.0f} s")
            ready, _, _ = select.select([self.replies_r], [], [], left)
            chunk = os.read(self.replies_r, 1 << 16) if ready else b""
            if ready and not chunk:
                raise BrowserError(f"Chromium exited: {self.stderr_tail() or 'no message'}")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message = json.loads(raw)
        self.note(message)
        return message

    def note(self, message: dict) -> None:
        """Keep the console errors and requested URLs that an event reports."""
        method, params = message.get("method"), message.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", "")))
                                                            for a in params.get("args", [])))  # fmt: skip
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(
                "exception: " + details.get("exception", {}).get("description", details.get("text", ""))
            )
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log: {entry.get('text', '')} {entry.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))

    def call(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        """Send a command and wait for its reply (events that arrive meanwhile are noted)."""
        wanted = self.send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self.receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message', message['error'])}")
                return message.get("result", {})

    def wait_for(self, event: str) -> None:
        deadline = time.monotonic() + self.timeout
        while self.receive(deadline).get("method") != event:
            pass

    def open(self, url: str, width: int = 1280, height: int = 800) -> None:
        """Load ``url`` in a fresh page ``width`` CSS pixels wide and wait for its load event."""
        target = self.call("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        attached = self.call("Target.attachToTarget", {"targetId": target, "flatten": True}, session=False)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})  # fmt: skip
        self.call("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> object:
        """The JSON value of a JavaScript expression in the page (promises awaited); BrowserError if it throws."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})  # fmt: skip
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"{expression[:80]!r} threw: "
                               f"{details.get('exception', {}).get('description', details.get('text'))}")  # fmt: skip
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page (beyond the viewport) at the page's width."""
        width, height = self.evaluate("[document.documentElement.clientWidth, "
                                      "document.documentElement.scrollHeight]")  # type: ignore[misc]  # fmt: skip
        shot = self.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width, "height": height,
                                                             "scale": 1}})  # fmt: skip
        atomic_write_bytes(path, base64.b64decode(shot["data"]))
        return path
