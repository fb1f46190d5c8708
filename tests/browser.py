"""Open a page in headless Chromium the way a reader would, with the network off, and report
what happened: console errors, every request the page made, a few DOM facts, a screenshot.

Speaks the DevTools protocol over ``--remote-debugging-pipe`` (Chromium reads commands on
fd 3 and writes replies and events on fd 4, each a JSON text ended by a NUL), so it needs
no driver and no port. Debian's ``chromium`` package (lab.sh installs it).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

DEADLINE = 60.0     # one page: launch, load, measure, screenshot


class BrowserError(Exception):
    pass


def screenshot_dir(config) -> Path:
    """Where tests keep their screenshots: ``<--lab-artifacts or <rootdir>/lab-artifacts>/screenshots``."""
    root = config.getoption("--lab-artifacts") or config.rootpath / "lab-artifacts"
    return Path(root) / "screenshots"


def chromium() -> Optional[str]:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def require_chromium() -> None:
    import pytest
    if chromium() is None:
        pytest.fail("chromium is not installed: these tests need Debian's chromium package "
                    "(livepatch-lab setup --test installs it)", pytrace=False)


@dataclass
class PageLoad:
    console_errors: list[str] = field(default_factory=list)   # console.error, exceptions, failed loads
    requests: list[str] = field(default_factory=list)         # every URL the page asked for
    facts: dict[str, Any] = field(default_factory=dict)       # the answers to the DOM queries
    screenshot: Optional[Path] = None


class _Pipe:
    def __init__(self, proc: subprocess.Popen, write_fd: int, read_fd: int, deadline: float):
        self.proc, self.write_fd, self.read_fd, self.deadline = proc, write_fd, read_fd, deadline
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _message(self) -> dict[str, Any]:
        while b"\0" not in self.buf:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed its pipe (exit {self.proc.poll()})")
                self.buf += chunk
        raw, self.buf = self.buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: Optional[str] = None, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        msg: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        os.write(self.write_fd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            e = self._message()
            if e.get("method") == method:
                return e
            self.events.append(e)


def _high(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def _errors(events: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    errors, urls = [], []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            errors.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                             for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            errors.append(f"exception: {d.get('text', '')} {d.get('exception', {}).get('description', '')}".strip())
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())
        elif m == "Network.loadingFailed":
            errors.append(f"load failed: {p.get('errorText')}")
        elif m == "Network.requestWillBeSent":
            urls.append(p.get("request", {}).get("url", ""))
    return errors, urls


def open_page(page: Path, screenshot: Path, queries: dict[str, str], width: int = 1280) -> PageLoad:
    """Load ``page`` offline, evaluate each of ``queries`` (JavaScript expressions, by name),
    and save a full-page screenshot."""
    binary = chromium()
    if binary is None:
        raise BrowserError("chromium is not installed (livepatch-lab setup --test installs Debian's chromium package)")
    deadline = time.monotonic() + DEADLINE
    # moved above fd 10 first, so that putting them on 3 and 4 cannot overwrite one another
    to_chrome_r, to_chrome_w, from_chrome_r, from_chrome_w = (_high(fd) for fd in (*os.pipe(), *os.pipe()))

    def pipes_on_3_and_4() -> None:   # in the child: the fds the protocol pipe uses
        os.dup2(to_chrome_r, 3)
        os.dup2(from_chrome_w, 4)

    with tempfile.TemporaryDirectory(prefix="lab-chromium-") as profile:
        argv = [binary, "--headless", "--disable-gpu", "--remote-debugging-pipe", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9", "about:blank"]
        if os.geteuid() == 0:
            argv.insert(1, "--no-sandbox")   # Chromium refuses to run as root with its sandbox
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, close_fds=False, preexec_fn=pipes_on_3_and_4)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        pipe = _Pipe(proc, to_chrome_w, from_chrome_r, deadline)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            sid = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Runtime", "Log", "Network", "Page"):
                pipe.call(f"{domain}.enable", sid)
            pipe.call("Network.emulateNetworkConditions", sid, offline=True, latency=0,
                      downloadThroughput=-1, uploadThroughput=-1)
            pipe.call("Emulation.setDeviceMetricsOverride", sid, width=width, height=900,
                      deviceScaleFactor=1, mobile=False)
            pipe.call("Page.navigate", sid, url=page.absolute().as_uri())
            pipe.wait_for("Page.loadEventFired")
            facts = {name: pipe.call("Runtime.evaluate", sid, expression=js, returnByValue=True)
                     ["result"].get("value") for name, js in queries.items()}
            size = pipe.call("Page.getLayoutMetrics", sid)["cssContentSize"]
            pipe.call("Emulation.setDeviceMetricsOverride", sid, width=width, height=int(size["height"]) + 1,
                      deviceScaleFactor=1, mobile=False)
            shot = pipe.call("Page.captureScreenshot", sid, format="png", captureBeyondViewport=True)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
            errors, urls = _errors(pipe.events)
            try:
                pipe.call("Browser.close")
            except BrowserError:
                pass   # it may close its pipe before it answers
            return PageLoad(errors, urls, facts, screenshot)
        finally:
            os.close(to_chrome_w)
            os.close(from_chrome_r)
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 5))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
