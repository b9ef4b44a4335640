"""The kiosk in a browser: a small local HTTP server with a fullscreen page and the same frames.

A pacer thread takes frames at the target fps (like the window's clock) while a page is watching (it
asked for a frame in the last `idle_after` seconds; with nobody watching, the walk waits and nothing is
rendered or encoded). The page fetches /frame.jpg again as soon as it has drawn the last one, so a slow
browser skips frames instead of queueing them; each frame is encoded as JPEG once, when first asked for.
Keys on the page reach the same player: space, s, n (not q: a visitor cannot stop the kiosk), and only
from the page itself: a POST whose Origin or Host is another site's is refused (any web page open on
the machine could otherwise press keys). A request is judged by its line and headers before any body is
read, a key's body is at most MAX_BODY bytes (the page sends none), and a connection that sends nothing for
CONNECTION_TIMEOUT seconds is closed, so neither a huge Content-Length nor idle clients can exhaust the
kiosk's memory or threads. Run Chromium with --kiosk --app=URL for a fullscreen screen without a browser
frame.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
import warnings
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gen.runtime.errors import GenError, GenWarning
from gen.runtime.images import encode_jpeg

from .player import Player
from .producer import KioskFailure

log = logging.getLogger("gen.kiosk")
WEB_KEYS = {" ": "space", "s": "s", "n": "n"}
# The page fetches a frame every 1/fps s on a kept-alive connection; a connection silent for this long (a
# closed page, or a client holding a thread) is dropped, and a browser simply opens a new one.
CONNECTION_TIMEOUT = 30.0
MAX_BODY = 1024  # bytes of a key's POST body, read and ignored; the page's fetch sends none

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


@dataclass(frozen=True)
class Address:
    """Where the page is served: this machine only, unless another host is given (then anyone who can
    reach it can watch); port 0 takes a free one."""

    host: str = "127.0.0.1"
    port: int = 8765

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise GenError(f"port must be between 0 and 65535 (got {self.port})")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FrameServer:
    """Serves the page and the player's newest frame as JPEG; call `serve()` (blocks) and `close()`."""

    def __init__(self, player: Player, fps: float, address: Address = Address(), quality: int = 90,
                 idle_after: float = 5.0) -> None:
        host, port = address.host, address.port
        if not is_loopback(host):
            warnings.warn(f"serving on {host}: anyone who can reach this machine on port {port} can watch and "
                          "press keys (space, s, n); bind to 127.0.0.1 unless that is meant", GenWarning, stacklevel=2)
        self.player, self.fps, self.quality, self.idle_after = player, fps, quality, idle_after
        self.loopback = is_loopback(host)
        self.frames = 0  # frames taken from the player
        self.encoded = 0  # JPEGs made (at most one per frame, and only for frames asked for)
        self.failure: KioskFailure | None = None
        self._jpeg: tuple[int, bytes] | None = None  # (frame number, JPEG)
        self._asked = -float("inf")  # when a page last asked for a frame
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

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def serve(self) -> None:
        """Serve until close(); raises KioskFailure when the producer's watchdog stops the kiosk."""
        self._pacer.start()
        self._serving.set()
        self.httpd.serve_forever(poll_interval=0.2)
        if self.failure is not None:
            raise self.failure

    def close(self) -> None:
        self._stop.set()
        if self._serving.is_set():  # (shutdown waits for serve_forever, which must have started)
            self.httpd.shutdown()
        self.httpd.server_close()

    def watched(self) -> bool:
        return time.monotonic() - self._asked < self.idle_after

    def _pace(self) -> None:
        period, deadline = 1.0 / self.fps, time.monotonic()
        while not self._stop.is_set():
            try:
                if self.watched():
                    if self.player.tick():
                        with self._new:
                            self.frames += 1
                            self._new.notify_all()
                else:
                    self.player.producer.check()  # nobody watching: the walk waits, the watchdog does not
            except KioskFailure as e:
                self.failure = e
                self.httpd.shutdown()  # serve() returns and raises it
                return
            deadline = max(deadline + period, time.monotonic() - period)  # hold the rate; never catch up in bursts
            self._stop.wait(max(0.0, deadline - time.monotonic()))

    def latest(self, timeout: float = 10.0) -> bytes | None:
        """The newest frame as JPEG (encoded now if nobody asked for it yet); None if none came in `timeout` s."""
        self._asked = time.monotonic()
        with self._new:
            if not self._new.wait_for(lambda: self.frames > 0, timeout):
                return None
            if self._jpeg is None or self._jpeg[0] != self.frames:
                self._jpeg = (self.frames, encode_jpeg(self.player.frame, self.quality))
                self.encoded += 1
            return self._jpeg[1]

    def own_host(self, host: str) -> bool:
        """Whether a request's Host header names this server (a loopback server: a loopback name and its port)."""
        name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
        if not name or not port.isdigit():
            name, port = host, "80"
        if int(port) != self.port:
            return False
        return not self.loopback or is_loopback(name.strip("[]"))

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self
        page = PAGE.replace("__FPS__", f"{self.fps:g}").replace("__KEYS__", json.dumps(WEB_KEYS))

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the page fetches a frame 30 times a second
            timeout = CONNECTION_TIMEOUT  # per read and write on the connection (socketserver sets it)

            def handle_one_request(self) -> None:
                self.body_read = False
                super().handle_one_request()

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
                # Who and what first, from the headers: a refused request's body is never read.
                host, origin = self.headers.get("Host", ""), self.headers.get("Origin")
                if not server.own_host(host) or (origin is not None and origin != f"http://{host}"):
                    log.warning("refused a key from %s (Host %s, Origin %s)", self.address_string(), host, origin)
                    self._send(403, "text/plain", b"keys are taken from this kiosk's own page only\n")
                elif (key := self.path.removeprefix("/key/")) not in WEB_KEYS.values():
                    self._send(404, "text/plain", b"unknown key\n")
                elif refused := self._read_body():
                    self._send(*refused)
                else:
                    server.player.press(key)
                    self._send(204, "text/plain", b"")

            def _read_body(self) -> tuple[int, str, bytes] | None:
                """Read (and drop) a body of at most MAX_BODY bytes, or the response that refuses it unread."""
                lengths = self.headers.get_all("Content-Length") or ["0"]
                if "Transfer-Encoding" in self.headers:
                    return 411, "text/plain", b"a key's request needs a Content-Length\n"
                if len(lengths) != 1 or not re.fullmatch(r"[0-9]{1,19}", lengths[0].strip()):
                    return 400, "text/plain", b"Content-Length must be one non-negative integer\n"
                length = int(lengths[0])
                if length > MAX_BODY:
                    return 413, "text/plain", f"a key's request body is at most {MAX_BODY} bytes\n".encode()
                if len(self.rfile.read(length)) < length:
                    self.close_connection = True  # the client went away mid-body
                self.body_read = True
                return None

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                announced = "Transfer-Encoding" in self.headers or any(
                    v.strip() != "0" for v in self.headers.get_all("Content-Length", []))
                if announced and not self.body_read:
                    self.send_header("Connection", "close")  # a body left unread: the next request would start in it
                self.end_headers()
                if body:
                    try:
                        self.wfile.write(body)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True  # the page moved on (reloaded, closed): nothing to tell anyone

            def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
                log.debug("%s %s", self.address_string(), format % args)

        return Handler

