#!/usr/bin/env python3
"""A small HTTP server that speaks code-server's login protocol, for proxy tests and benchmarks.

Started by the job script like code-server (``--bind-addr HOST:PORT``, password in $PASSWORD).
POST /login with the password sets the ``code-server-session`` cookie; /healthz is open; every
other path needs the cookie (401 without it) and:
  /echo      any method: JSON of what arrived (method, path, query, headers, body size, sha256)
  /big?n=N   N bytes, streamed in 64 KiB pieces
  /small     a few bytes
  /redirect-abs, /redirect-rel, /redirect-ext   redirects of each kind
  /set-cookie                                   sets a cookie and tries to set the session cookie
  /expire    forgets every session (the next request gets 401)
  /whoami    the SLURM job id and port of this server, the folder it opens, its environment
  /csp       a page with a Content-Security-Policy of its own
  /ws        a websocket that echoes every message (text or binary), subprotocols answered;
             /ws?answers=2 answers each message with two frames, 1 ms apart (a terminal's echo,
             then its prompt)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import struct
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PASSWORD = os.environ.get("PASSWORD", "")
SESSIONS: set[str] = set()
CHUNK = b"0123456789abcdef" * 4096  # 64 KiB


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes

    def log_message(self, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None,
              ctype: str = "text/plain") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        # Headers and body in one write, as a real server does for a small answer.
        if self.command != "HEAD":
            self._headers_buffer.append(b"\r\n" + body)
            self.flush_headers()
        else:
            self.end_headers()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _authed(self) -> bool:
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "code-server-session" and value in SESSIONS:
                return True
        return False

    def handle_any(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        body = self._body()
        if url.path == "/healthz":
            return self._send(200, b'{"status":"alive"}', ctype="application/json")
        if url.path == "/login" and self.command == "POST":
            form = urllib.parse.parse_qs(body.decode())
            if form.get("password", [""])[0] == PASSWORD and PASSWORD:
                token = secrets.token_hex(16)
                SESSIONS.add(token)
                return self._send(302, headers={
                    "Location": "./", "Set-Cookie": f"code-server-session={token}; Path=/"})
            return self._send(200, b"login page: wrong password")
        if not self._authed():
            return self._send(401, b"unauthorized")
        if url.path == "/echo":
            info = {"method": self.command, "path": url.path, "query": url.query,
                    "headers": dict(self.headers.items()), "cookies": self.headers.get("Cookie"),
                    "bodyLength": len(body), "bodySha256": hashlib.sha256(body).hexdigest()}
            return self._send(200, json.dumps(info).encode(), ctype="application/json")
        if url.path == "/big":
            n = int(urllib.parse.parse_qs(url.query).get("n", ["0"])[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                piece = CHUNK[: min(n, len(CHUNK))]
                self.wfile.write(piece)
                n -= len(piece)
            return None
        if url.path == "/small":
            return self._send(200, b"ok")
        if url.path == "/redirect-abs":
            return self._send(302, headers={"Location": "/echo?from=abs"})
        if url.path == "/redirect-rel":
            return self._send(302, headers={"Location": "./echo?from=rel"})
        if url.path == "/redirect-ext":
            return self._send(302, headers={"Location": "https://example.org/elsewhere"})
        if url.path == "/set-cookie":
            self.send_response(200)
            self.send_header("Set-Cookie", "theme=dark; Path=/")
            self.send_header("Set-Cookie", "code-server-session=stolen; Path=/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if url.path == "/expire":
            SESSIONS.clear()
            return self._send(200, b"expired")
        if url.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            return self._websocket(int(urllib.parse.parse_qs(url.query).get("answers", ["1"])[0]))
        if url.path == "/csp":
            return self._send(200, b"<p>framed</p>", ctype="text/html",
                              headers={"Content-Security-Policy": "default-src 'self'"})
        if url.path == "/whoami":
            info = {"jobId": os.environ.get("SLURM_JOB_ID"), "port": self.server.server_address[1],
                    # The folder it was asked to open (code-server's last argument), and what
                    # the job gave its environment.
                    "folder": sys.argv[-1], "cwd": os.getcwd(),
                    "env": {k: os.environ.get(k) for k in (
                        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                        "VSCODE_PROXY_URI", "SLURM_JOB_PARTITION", "SLURM_JOB_GPUS",
                        "CUDA_VISIBLE_DEVICES")}}
            return self._send(200, json.dumps(info).encode(), ctype="application/json")
        return self._send(404, b"not found")

    def _websocket(self, answers: int = 1) -> None:
        key = self.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        protocols = [p.strip() for p in self.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if protocols[0]:
            self.send_header("Sec-WebSocket-Protocol", protocols[0])
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            opcode, length = head[0] & 0x0F, head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(length)))
            if opcode == 8:  # close: answer it and end
                self.wfile.write(b"\x88\x00")
                return
            if opcode == 9:  # ping
                opcode = 10
            if length < 126:
                frame = bytes([0x80 | opcode, length])
            elif length < 65536:
                frame = bytes([0x80 | opcode, 126]) + struct.pack(">H", length)
            else:
                frame = bytes([0x80 | opcode, 127]) + struct.pack(">Q", length)
            for i in range(answers if opcode in (1, 2) else 1):
                if i:
                    time.sleep(0.001)
                self.wfile.write(frame + data)
                self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


def main() -> None:
    args = sys.argv[1:]
    host, port = args[args.index("--bind-addr") + 1].rsplit(":", 1)
    ThreadingHTTPServer.daemon_threads = True
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
