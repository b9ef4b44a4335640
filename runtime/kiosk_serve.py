"""The kiosk in a browser: a small local HTTP server with a fullscreen page and the same frames.

A pacer thread takes frames at the target fps (like the window's clock) and keeps the newest as a
JPEG; the page fetches /frame.jpg again as soon as it has drawn the last one, so a slow browser skips
frames instead of queueing them. Keys on the page reach the same player: space, s, n (not q: a visitor
cannot stop the kiosk). Run Chromium with --kiosk --app=URL for a fullscreen screen without a browser frame.
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

from .errors import GenError, GenWarning
from .kiosk_frames import Player

log = logging.getLogger("gen.kiosk")
WEB_KEYS = {" ": "space", "s": "s", "n": "n"}

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>gen kiosk</title>
<style>
html, body { margin: 0; height: 100%; background: #000; overflow: hidden; cursor: none; }
img { width: 100vw; height: 100vh; object-fit: contain; image-rendering: auto; display: block; }
</style></head>
<body><img id="frame" src="frame.jpg" alt="">
<script>
// The first frame is in the HTML, so the page's load event waits for a picture; then fetch the next
// one as soon as the last is drawn, at most `fps` times a second.
const img = document.getElementById("frame"), fps = __FPS__;
let shown = null;
async function play() {
  for (;;) {
    const start = performance.now();
    try {
      const r = await fetch("frame.jpg?t=" + start, {cache: "no-store"});
      if (!r.ok) throw new Error(r.status);
      const url = URL.createObjectURL(await r.blob());
      img.src = url;
      await img.decode();
      if (shown) URL.revokeObjectURL(shown);
      shown = url;
    } catch (e) {
      await new Promise(ok => setTimeout(ok, 1000));  // the server restarts: try again
    }
    await new Promise(ok => setTimeout(ok, Math.max(0, 1000 / fps - (performance.now() - start))));
  }
}
img.addEventListener("load", () => play(), {once: true});
const keys = __KEYS__;
document.addEventListener("keydown", e => {
  if (e.key in keys) fetch("key/" + keys[e.key], {method: "POST"});
  if (e.key === "f") document.documentElement.requestFullscreen();
});
</script></body></html>
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FrameServer:
    """Serves the page and the player's newest frame as JPEG; call `serve()` (blocks) and `close()`."""

    def __init__(self, player: Player, fps: float = 30.0, host: str = "127.0.0.1", port: int = 8765,
                 quality: int = 90) -> None:
        if not is_loopback(host):
            warnings.warn(f"serving on {host}: anyone who can reach this machine on port {port} can watch and "
                          "press keys (space, s, n); bind to 127.0.0.1 unless that is meant", GenWarning, stacklevel=2)
        self.player, self.fps, self.quality = player, fps, quality
        self.jpeg: bytes | None = None
        self.frames = 0
        self._new = threading.Condition()
        self._stop, self._serving = threading.Event(), threading.Event()
        try:
            self.httpd = ThreadingHTTPServer((host, port), self._handler())
        except OSError as e:
            raise GenError(f"cannot serve on {host}:{port} ({e.strerror or e}); choose another --port") from None
        self.httpd.daemon_threads = True
        self._pacer = threading.Thread(target=self._pace, name="kiosk-pacer", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/"

    def serve(self) -> None:
        self._pacer.start()
        self._serving.set()
        self.httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        self._stop.set()
        if self._serving.is_set():  # (shutdown waits for serve_forever, which must have started)
            self.httpd.shutdown()
        self.httpd.server_close()

    def _pace(self) -> None:
        period, deadline = 1.0 / self.fps, time.monotonic()
        while not self._stop.is_set():
            if self.player.tick():
                jpeg = encode_jpeg(self.player.frame, self.quality)
                with self._new:
                    self.jpeg, self.frames = jpeg, self.frames + 1
                    self._new.notify_all()
            deadline = max(deadline + period, time.monotonic() - period)  # hold the rate; never catch up in bursts
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def latest(self, timeout: float = 10.0) -> bytes | None:
        with self._new:
            self._new.wait_for(lambda: self.jpeg is not None, timeout)
            return self.jpeg

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        page = PAGE.replace("__FPS__", f"{self.fps:g}").replace("__KEYS__", json.dumps(WEB_KEYS))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", page.encode())
                elif path == "/frame.jpg":
                    jpeg = server.latest()
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpeg)
                else:
                    self._send(404, "text/plain", b"not found\n")

            def do_POST(self) -> None:  # noqa: N802
                key = self.path.removeprefix("/key/")
                if key in WEB_KEYS.values():
                    server.player.press(key)
                    self._send(204, "text/plain", b"")
                else:
                    self._send(404, "text/plain", b"unknown key\n")

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the page moved on (reloaded, closed): nothing to tell anyone

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
                log.debug("%s %s", self.address_string(), format % args)

        return Handler


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    # 4:4:4: halving the colour resolution smears a small generated picture's colours, then the page enlarges it
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()
