"""Open every page of the built docs site in headless Chromium and fail on console errors.

Serves the site directory on 127.0.0.1, starts Debian's ``chromium`` headless with a fresh profile, and drives it
over the DevTools protocol (``websocket-client``). A page fails when it logs a console error, throws an uncaught
exception, fails to load a resource, gets an HTTP status >= 400 for one, or requests anything outside the local
server (the site must work offline: no web fonts, no CDN). Screenshots of the home page, the Concepts page and the
vision tutorial are saved.

    python tests_docs/browser_check.py --site site --artifacts artifacts/docs

Exit status 0 when every page is clean; the report is also written to ``<artifacts>/browser-report.json``.
"""

from __future__ import annotations

import argparse
import base64
import functools
import http.server
import json
import os
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import websocket  # websocket-client

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]
SCREENSHOTS = {"home.png": "", "tutorial-vision.png": "tutorials/vision/", "concepts.png": "concepts/"}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the output readable
        pass


def serve(site: Path) -> tuple[socketserver.TCPServer, str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("chromium not found: apt-get update && apt-get install -y chromium")


class Browser:
    def __init__(self, binary: str) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="tarot-docs-chromium-"))
        self.proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.time() + 60
        while not port_file.is_file() or not port_file.read_text().strip():
            if self.proc.poll() is not None:
                raise SystemExit(f"chromium exited: {self.proc.stderr.read().decode(errors='replace')[-2000:]}")
            if time.time() > deadline:
                raise SystemExit("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def new_tab(self) -> Tab:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(req, timeout=30) as resp:
            info = json.load(resp)
        return Tab(info["webSocketDebuggerUrl"], info["id"], self.port)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


class Tab:
    def __init__(self, ws_url: str, target_id: str, port: int) -> None:
        self.ws = websocket.create_connection(ws_url, timeout=60, suppress_origin=True)
        self.target_id, self.port = target_id, port
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            self.ws.settimeout(max(0.05, end - time.time()))
            try:
                msg = json.loads(self.ws.recv())
            except websocket.WebSocketTimeoutException:
                break
            if "method" in msg:
                self.events.append(msg)
        self.ws.settimeout(60)

    def wait_for(self, method: str, timeout: float) -> bool:
        end = time.time() + timeout
        while time.time() < end:
            if any(e["method"] == method for e in self.events):
                return True
            self.pump(min(0.5, end - time.time()))
        return any(e["method"] == method for e in self.events)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/close/{self.target_id}", timeout=10).close()


def problems(events: list[dict], base: str) -> list[str]:
    """Console errors, exceptions, failed or non-local requests and HTTP errors among the DevTools events."""
    out = []
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append("exception: " + (d.get("exception", {}).get("description") or d.get("text", "?")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            entry = p["entry"]
            out.append(f"log error ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        elif m == "Network.requestWillBeSent":
            url = p.get("request", {}).get("url", "")
            if not (
                url.startswith(base) or url.startswith("data:") or url.startswith("about:") or url.startswith("blob:")
            ):
                out.append(f"request outside the local site: {url}")
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            out.append(f"loading failed: {p.get('errorText')} ({p.get('type')})")
        elif m == "Network.responseReceived" and p.get("response", {}).get("status", 200) >= 400:
            out.append(f"HTTP {p['response']['status']}: {p['response'].get('url')}")
    return out


def pages(site: Path) -> list[str]:
    """Site-relative URLs of every built page (directory URLs end with '/')."""
    out = []
    for html in sorted(site.rglob("*.html")):
        rel = html.relative_to(site).as_posix()
        if rel == "404.html":
            continue
        out.append(rel[: -len("index.html")] if rel.endswith("index.html") else rel)
    return out


def check(site: Path, artifacts: Path, settle: float = 0.7) -> dict:
    artifacts.mkdir(parents=True, exist_ok=True)
    server, base = serve(site)
    browser = Browser(find_chromium())
    report: dict = {"base": base, "pages": {}, "screenshots": []}
    try:
        for rel in pages(site):
            tab = browser.new_tab()
            try:
                for domain in ("Runtime", "Log", "Network", "Page"):
                    tab.send(f"{domain}.enable")
                tab.send(
                    "Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False
                )
                tab.send("Page.navigate", url=base + rel)
                loaded = tab.wait_for("Page.loadEventFired", timeout=60)
                tab.pump(settle)  # late errors (scripts run after load, e.g. math rendering)
                found = problems(tab.events, base)
                if not loaded:
                    found.append("page did not finish loading within 60 s")
                title = tab.send("Runtime.evaluate", expression="document.title").get("result", {}).get("value")
                math = tab.send("Runtime.evaluate", expression="document.querySelectorAll('.katex').length")
                report["pages"][rel or "/"] = {
                    "title": title,
                    "problems": found,
                    "katex_nodes": math.get("result", {}).get("value"),
                }
                for name, want in SCREENSHOTS.items():
                    if rel == want:
                        shot = tab.send("Page.captureScreenshot", format="png", captureBeyondViewport=False)
                        (artifacts / name).write_bytes(base64.b64decode(shot["data"]))
                        report["screenshots"].append(str(artifacts / name))
                status = "ok" if not found else f"{len(found)} problem(s)"
                print(f"{status:>14}  /{rel}")
                for line in found:
                    print(f"                {line}")
            finally:
                tab.close()
    finally:
        browser.close()
        server.shutdown()
    missing = [n for n, want in SCREENSHOTS.items() if not (artifacts / n).is_file()]
    report["failed_pages"] = [p for p, r in report["pages"].items() if r["problems"]]
    report["missing_screenshots"] = missing
    (artifacts / "browser-report.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--site", type=Path, default=Path("site"), help="built site directory (mkdocs build -d)")
    ap.add_argument("--artifacts", type=Path, default=Path("artifacts/docs"), help="screenshots and report")
    args = ap.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"{args.site}: no index.html; build the site first (nox -s docs)", file=sys.stderr)
        return 2
    os.environ.setdefault("NO_PROXY", "127.0.0.1")
    report = check(args.site, args.artifacts)
    n = len(report["pages"])
    bad = report["failed_pages"]
    print(f"{n - len(bad)}/{n} pages without console errors; screenshots: {', '.join(report['screenshots'])}")
    if report["missing_screenshots"]:
        print(f"missing screenshots: {report['missing_screenshots']}", file=sys.stderr)
    return 1 if bad or report["missing_screenshots"] or n == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
