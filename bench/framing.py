#!/usr/bin/env python
"""Benchmark of the proxy's HTTP/1.1 response framing (jupyter_hpc_manager/upstream.py) against
h11's client-side parser, on the same byte streams, in this process (no network, no SSH):

  1. a 100 MiB Content-Length body, arriving in 128 KiB pieces (the SSH packet size we use)
  2. the same body chunked (Transfer-Encoding: chunked), in chunks of 64 KiB and of 1 KiB,
     the stream again arriving in 128 KiB pieces (code-server/Node streams files chunked)
  3. 20,000 small responses (a code-server static file answer: 10 headers, 200-byte body) on one
     keep-alive connection, each arriving in one piece; timed once for reading the response
     alone and once with the request head each side makes for it

(a) ours: upstream._read_head + upstream.Response(...).body(), reading from a connection of the
    shape of upstream.ChannelConnection (async recv, unread) that hands out the scripted pieces.
(b) h11: h11.Connection(h11.CLIENT), after sending the request; receive_data + next_event, the
    Data events yielded from an async generator fed by the same connection's recv (so both
    sides pay the same awaits and async-generator steps per piece).
The consumer only counts bytes. MB/s counts the bytes fed (head, framing and body). Each case
runs --runs times and the best is kept. Also shown: whether the body pieces handed out are the
very objects that arrived (zero-copy), and the peak extra memory (tracemalloc) for case 1.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import h11
from tornado import httputil

from jupyter_hpc_manager import upstream

KIB = 1024
MIB = 1024 * KIB
PIECE = 128 * KIB

BIG_HEAD = ("HTTP/1.1 200 OK\r\n"
            "Accept-Ranges: bytes\r\n"
            "Cache-Control: no-cache\r\n"
            "Content-Type: application/octet-stream\r\n"
            "{framing}\r\n"
            "Date: Tue, 14 May 2024 10:00:00 GMT\r\n"
            "Connection: keep-alive\r\n"
            "Keep-Alive: timeout=5\r\n\r\n")
SMALL_BODY = bytes(range(200))
SMALL = ("HTTP/1.1 200 OK\r\n"
         "Accept-Ranges: bytes\r\n"
         "Cache-Control: public, max-age=31536000\r\n"
         "Last-Modified: Tue, 14 May 2024 09:58:12 GMT\r\n"
         'ETag: W/"c8-18f76c8a1e0"\r\n'
         "Content-Type: application/javascript; charset=UTF-8\r\n"
         "Content-Length: 200\r\n"
         "Vary: Accept-Encoding\r\n"
         "Date: Tue, 14 May 2024 10:00:00 GMT\r\n"
         "Connection: keep-alive\r\n"
         "Keep-Alive: timeout=5\r\n\r\n").encode("latin-1") + SMALL_BODY
TARGET = "/stable-1234/static/out/vs/workbench/workbench.web.main.js"
REQUEST_HEADERS = [("Host", "127.0.0.1:8080"), ("Accept", "*/*"),
                   ("Accept-Encoding", "gzip, deflate, br"), ("User-Agent", "Mozilla/5.0 bench"),
                   ("Cookie", "code-server-session=0123456789abcdef")]


class Conn:
    """The part of upstream.ChannelConnection the parser uses, handing out scripted pieces
    (the same objects, in order); unread() as in ChannelConnection."""

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = pieces
        self._i = 0
        self._unread = b""

    async def recv(self) -> bytes:
        if self._unread:
            data, self._unread = self._unread, b""
            return data
        i = self._i
        if i < len(self._pieces):
            self._i = i + 1
            return self._pieces[i]
        return b""

    def unread(self, data: bytes) -> None:
        self._unread = data + self._unread if self._unread else data

    @property
    def buffered(self) -> bool:
        return bool(self._unread) or self._i < len(self._pieces)

    @property
    def reusable(self) -> bool:
        return not self.buffered

    def close(self) -> None:
        pass


# -- the two parsers, driven the same way ---------------------------------------------------

async def ours_response(conn: Conn) -> AsyncIterator[bytes]:
    start, headers = await upstream._read_head(conn, False)  # type: ignore[arg-type]
    response = upstream.Response(conn, start, headers, "GET")  # type: ignore[arg-type]
    async for data in response.body():
        yield data


def h11_client() -> h11.Connection:
    h = h11.Connection(h11.CLIENT)
    h11_request(h)
    return h


def h11_request(h: h11.Connection) -> bytes:
    out = h.send(h11.Request(method="GET", target=TARGET, headers=REQUEST_HEADERS))
    end = h.send(h11.EndOfMessage())
    return (out or b"") + (end or b"")


async def h11_response(conn: Conn, h: h11.Connection) -> AsyncIterator[bytes]:
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            h.receive_data(await conn.recv())
        elif type(event) is h11.Response:
            break
        else:
            raise AssertionError(event)
    while True:
        event = h.next_event()
        if event is h11.NEED_DATA:
            h.receive_data(await conn.recv())
        elif type(event) is h11.Data:
            yield event.data
        elif type(event) is h11.EndOfMessage:
            return
        else:
            raise AssertionError(event)


# -- the cases --------------------------------------------------------------------------------

def cut(stream: bytes, size: int = PIECE) -> list[bytes]:
    return [stream[i:i + size] for i in range(0, len(stream), size)]


def fixed_stream(body: bytes) -> bytes:
    return BIG_HEAD.format(framing=f"Content-Length: {len(body)}").encode() + body


def chunked_stream(body: bytes, chunk: int) -> bytes:
    parts = [BIG_HEAD.format(framing="Transfer-Encoding: chunked").encode()]
    for i in range(0, len(body), chunk):
        piece = body[i:i + chunk]
        parts += [b"%x\r\n" % len(piece), piece, b"\r\n"]
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


async def big(parser: str, pieces: list[bytes],
              sink: Callable[[bytes], None] | None = None) -> float:
    """Seconds to read one large response from the pieces, body handed to ``sink`` if given."""
    conn = Conn(pieces)
    t0 = time.perf_counter()
    body = ours_response(conn) if parser == "ours" else h11_response(conn, h11_client())
    n = 0
    if sink is None:
        async for data in body:
            n += len(data)
    else:
        async for data in body:
            n += len(data)
            sink(data)
    elapsed = time.perf_counter() - t0
    assert not conn.buffered, parser
    return elapsed


async def small(parser: str, pieces: list[bytes]) -> tuple[float, float]:
    """Seconds for reading the responses alone, and for requests + responses."""
    conn = Conn(pieces)
    headers = httputil.HTTPHeaders(REQUEST_HEADERS)
    h = h11.Connection(h11.CLIENT)
    clock = time.perf_counter
    reading = 0.0
    t_all = clock()
    for i in range(len(pieces)):
        if parser == "ours":
            upstream._request_head("GET", TARGET, headers)
            t0 = clock()
            start, head = await upstream._read_head(conn, i > 0)  # type: ignore[arg-type]
            response = upstream.Response(conn, start, head, "GET")  # type: ignore[arg-type]
            n = 0
            async for data in response.body():
                n += len(data)
            reading += clock() - t0
            assert response.complete and n == 200
        else:
            if i:
                h.start_next_cycle()
            h11_request(h)
            t0 = clock()
            n = 0
            async for data in h11_response(conn, h):
                n += len(data)
            reading += clock() - t0
            assert n == 200
    return reading, clock() - t_all


def check(parser: str, pieces: list[bytes], body: bytes) -> str:
    """Read once, outside the timings: the body must come out intact; how many of the pieces
    handed out are input objects? (The inputs stay alive, so an id in the set is that object.)"""
    inputs = {id(p) for p in pieces}
    digest = hashlib.sha256()
    counts = [0, 0]

    def sink(data: bytes) -> None:
        digest.update(data)
        counts[0] += 1
        counts[1] += id(data) in inputs

    asyncio.run(big(parser, pieces, sink))
    assert digest.digest() == hashlib.sha256(body).digest(), parser
    return f"{counts[1]}/{counts[0]}"


def check_small(parser: str) -> None:
    pieces = [SMALL * 1 for _ in range(3)]

    async def main() -> list[bytes]:
        conn, h, out = Conn(pieces), h11.Connection(h11.CLIENT), []
        for i in range(len(pieces)):
            if parser == "ours":
                body = ours_response(conn)
            else:
                if i:
                    h.start_next_cycle()
                h11_request(h)
                body = h11_response(conn, h)
            out.append(b"".join([bytes(d) async for d in body]))
        return out

    assert asyncio.run(main()) == [SMALL_BODY] * 3, parser


def peak_memory(parser: str, pieces: list[bytes]) -> int:
    async def main() -> int:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await big(parser, pieces)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak - before

    return asyncio.run(main())


def best(runs: int, make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    results = []
    for _ in range(runs):
        gc.collect()
        results.append(asyncio.run(make()))
    return min(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("-n", type=int, default=20_000, help="small responses")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    body = os.urandom(MIB) * args.size_mib
    rows: list[tuple[str, float, float, float, float, str]] = []
    zero_copy: dict[str, tuple[str, str]] = {}
    memory: dict[str, int] = {}

    cases = [(f"{args.size_mib} MiB, Content-Length", lambda: fixed_stream(body))]
    for chunk in (64 * KIB, KIB):
        cases.append((f"{args.size_mib} MiB, chunked {chunk // KIB} KiB",
                      lambda chunk=chunk: chunked_stream(body, chunk)))
    for name, make_stream in cases:
        stream = make_stream()
        pieces = cut(stream)
        del stream
        zero_copy[name] = (check("ours", pieces, body), check("h11", pieces, body))
        if not memory:
            memory = {p: peak_memory(p, pieces) for p in ("ours", "h11")}
        size = sum(map(len, pieces))
        t_ours = best(args.runs, lambda pieces=pieces: big("ours", pieces))
        t_h11 = best(args.runs, lambda pieces=pieces: big("h11", pieces))
        rows.append((name + f", {len(pieces)} pieces of 128 KiB", size / t_ours / 1e6,
                     t_ours * 1e6, size / t_h11 / 1e6, t_h11 * 1e6, "1 response"))
        del pieces

    check_small("ours")
    check_small("h11")
    pieces = [SMALL * 1 for _ in range(args.n)]  # each response its own object, as from SSH
    size = sum(map(len, pieces))
    ours = [asyncio.run(small("ours", pieces)) for _ in range(args.runs)]
    theirs = [asyncio.run(small("h11", pieces)) for _ in range(args.runs)]
    for i, what in enumerate(("response only", "request head + response")):
        t_ours = min(r[i] for r in ours)
        t_h11 = min(r[i] for r in theirs)
        rows.append((f"{args.n:,} small responses ({len(SMALL)} B), {what}",
                     size / t_ours / 1e6, t_ours / args.n * 1e6, size / t_h11 / 1e6,
                     t_h11 / args.n * 1e6, f"{args.n:,} responses"))

    print()
    print("| case | ours MB/s | ours µs/response | h11 MB/s | h11 µs/response | "
          "ratio ours/h11 (MB/s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, mb_ours, us_ours, mb_h11, us_h11, _ in rows:
        print(f"| {name} | {mb_ours:.0f} | {us_ours:,.1f} | {mb_h11:.0f} | {us_h11:,.1f} | "
              f"{mb_ours / mb_h11:.2f} |")
    print()
    print("| case | body pieces handed out that are input objects: ours | h11 |")
    print("|---|---:|---:|")
    for name, (z_ours, z_h11) in zero_copy.items():
        print(f"| {name} | {z_ours} | {z_h11} |")
    print()
    first = cases[0][0]
    print(f"peak extra memory (tracemalloc), {first}: ours {memory['ours'] / KIB:,.0f} KiB, "
          f"h11 {memory['h11'] / KIB:,.0f} KiB")
    print(f"best of {args.runs} runs; MB/s counts the bytes fed (head, framing and body); "
          "h11 hands out bytearrays")


if __name__ == "__main__":
    main()
