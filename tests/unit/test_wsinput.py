"""The browser->IDE input meter: real masked client frames, plain and permessage-deflate (as
browsers compress: raw deflate, sync flush, the 00 00 ff ff tail removed), cut anywhere; and
what it judges input in VS Code's messages, built here as the workbench of VS Code 1.139 builds
them (the handshake's JSON, ipc.ts's serialize() and rpcProtocol.ts's MessageIO)."""

from __future__ import annotations

import itertools
import json
import struct
import tracemalloc
import zlib

import pytest

from jupyter_hpc_manager import wsinput
from jupyter_hpc_manager.wsinput import ConnectionType, InputMeter, MessageType, Seen

TAIL = b"\x00\x00\xff\xff"
_masks = itertools.count(1)


def msg(kind: int, ident: int = 0, ack: int = 0, data: bytes = b"") -> bytes:
    """One VS Code protocol message: type, id, ack, data length (big-endian), data."""
    return struct.pack(">BIII", kind, ident, ack, len(data)) + data


# -- VS Code's messages ---------------------------------------------------------------------------
def vql(n: int) -> bytes:
    """ipc.ts writeInt32VQL: 7 bits a byte, the lowest first, 0x80 when more follow."""
    out = bytearray()
    while True:
        n, low = n >> 7, n & 0x7F
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ser(value: object) -> bytes:
    """ipc.ts serialize(): a DataType byte (Undefined=0, String=1, VSBuffer=3, Array=4,
    Object=5, Uint=6), then a VQL (length, count or value) and the bytes."""
    if value is None:
        return b"\x00"
    if isinstance(value, str):
        return b"\x01" + vql(len(value.encode())) + value.encode()
    if isinstance(value, bytes):
        return b"\x03" + vql(len(value)) + value
    if isinstance(value, list):
        return b"\x04" + vql(len(value)) + b"".join(ser(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return b"\x06" + vql(value)
    text = json.dumps(value, separators=(",", ":")).encode()
    return b"\x05" + vql(len(text)) + text


def regular(data: bytes, ident: int = 7) -> bytes:
    return msg(MessageType.REGULAR, ident=ident, ack=3, data=data)


def call(channel: str, name: str, arg: object = None, ident: int = 9, kind: int = 100) -> bytes:
    """An IPC request (Promise=100) or event listen (102): header [type, id, channel, name], then
    the argument."""
    return regular(ser([kind, ident, channel, name]) + ser(arg), ident)


def response(kind: int, ident: int = 9, data: object = None) -> bytes:
    """An IPC response: [200], or [type, id] and the data (PromiseSuccess=201, PromiseError=202,
    PromiseErrorObj=203, EventFire=204); a cancel (101) or dispose (103) is [type, id] too."""
    return regular(ser([kind] if kind == 200 else [kind, ident]) + ser(data))


def agent_host(frame_: dict[str, object]) -> bytes:
    """A JSON-RPC frame to the agent host: agentHostProxy.send(JSON.stringify(frame))."""
    return call("agentHostProxy", "send", json.dumps(frame_, separators=(",", ":")))


def rpc(method: str, args: list[object], req: int = 1, rpc_id: int = 7, kind: int = 1) -> bytes:
    """An RPC request: type (RequestJSONArgs=1, ..WithCancellation=2), req (u32), rpcId (u8),
    the method (u8 length), the JSON args (u32 length); RequestMixedArgs=3/4: the args as an
    array of (1, u32 length, JSON)."""
    name = method.encode()
    head = bytes([kind]) + req.to_bytes(4, "big") + bytes([rpc_id, len(name)]) + name
    if kind in (1, 2):
        text = json.dumps(args, separators=(",", ":")).encode()
        return regular(head + len(text).to_bytes(4, "big") + text)
    parts = [json.dumps(a, separators=(",", ":")).encode() for a in args]
    return regular(head + bytes([len(parts)])
                   + b"".join(b"\x01" + len(p).to_bytes(4, "big") + p for p in parts))


def rpc_reply(kind: int, req: int = 1, payload: bytes = b"") -> bytes:
    """Acknowledged=5, Cancel=6, ReplyOKEmpty=7, ReplyErrEmpty=12: type and req only;
    ReplyOKJSON=9 and the others: then the payload."""
    return regular(bytes([kind]) + req.to_bytes(4, "big") + payload)


def control(message: dict[str, object]) -> bytes:
    return msg(MessageType.CONTROL, data=json.dumps(message, separators=(",", ":")).encode())


KEEPALIVE = msg(MessageType.KEEP_ALIVE, ack=41)
ACK = msg(MessageType.ACK, ack=42)
AUTH = control({"type": "auth", "auth": "0" * 20, "data": "d0e2f5a1"})


def connection_type(kind: int, **args: object) -> bytes:
    message: dict[str, object] = {"type": "connectionType", "commit": "c" * 40,
                                  "signedData": "s" * 64, "desiredConnectionType": kind}
    if args:
        message["args"] = args
    return control(message)


MANAGEMENT = AUTH + connection_type(ConnectionType.MANAGEMENT)
EXTENSION_HOST = AUTH + connection_type(ConnectionType.EXTENSION_HOST, language="en")
# the remote indicator's latency check (5 a minute while the tab has focus)
PING = call("telemetry", "ping")
# what a person's workbench sends: a key typed in a terminal (a Regular message)
REGULAR = call("remoteterminal", "$input", [1, "l"])
TYPED = rpc("$acceptModelChanged", ["file:///home/a/notes.txt",
                                    {"changes": [{"text": "x"}], "versionId": 3}, True])


def frame(payload: bytes, opcode: int = 2, fin: bool = True, rsv1: bool = False,
          masked: bool = True) -> bytes:
    """One client frame, masked byte by byte with a new key each time (as RFC 6455 says)."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([b0, bit | n])
    elif n < 1 << 16:
        head = bytes([b0, bit | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, bit | 127]) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    k = next(_masks)
    key = bytes((k * 73 + i * 29 + 1) & 0xFF for i in range(4))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Browser:
    """A browser's side of the websocket after the 101 that granted ``extensions``."""

    def __init__(self, extensions: str | None = None, bits: int = 15) -> None:
        self.extensions = extensions
        self.deflate = bool(extensions)
        self.takeover = "client_no_context_takeover" not in (extensions or "")
        self.bits = bits
        self._deflater = zlib.compressobj(wbits=-bits)

    def compress(self, payload: bytes) -> bytes:
        if not self.takeover:
            self._deflater = zlib.compressobj(wbits=-self.bits)
        out = self._deflater.compress(payload) + self._deflater.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(TAIL)
        return out[:-4]

    def send(self, payload: bytes, cuts: tuple[int, ...] = ()) -> bytes:
        """One binary ws message, compressed if negotiated, in len(cuts) + 1 frames cut at
        ``cuts`` (offsets in the bytes on the wire, i.e. the compressed ones; a cut at 0 or
        past the end makes an empty first or last frame)."""
        body = self.compress(payload) if self.deflate else payload
        bounds = [0, *(min(c, len(body)) for c in cuts), len(body)]
        assert bounds == sorted(bounds), bounds
        frames = []
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            frames.append(frame(body[a:b], opcode=2 if i == 0 else 0,
                                fin=i == len(bounds) - 2, rsv1=self.deflate and i == 0))
        return b"".join(frames)

    def meter(self, handshake: bytes = b"") -> InputMeter:
        """A meter of this socket, fed ``handshake`` (sent in one ws message)."""
        meter = InputMeter(self.extensions)
        if handshake:
            assert meter.feed(self.send(handshake)) is False
        return meter


MODES = {
    "plain": None,
    "deflate": "permessage-deflate",
    "deflate-no-takeover": "permessage-deflate; client_no_context_takeover",
}


@pytest.fixture(params=list(MODES.values()), ids=list(MODES))
def browser(request: pytest.FixtureRequest) -> Browser:
    return Browser(request.param)


def feed_all(meter: InputMeter, pieces: list[bytes]) -> list[bool]:
    return [meter.feed(p) for p in pieces]


# -- what counts --------------------------------------------------------------------------------
def test_keepalives_alone_are_not_input(browser: Browser) -> None:
    meter = browser.meter()
    assert feed_all(meter, [browser.send(KEEPALIVE) for _ in range(20)]) == [False] * 20
    assert meter.parsing


def test_acks_alone_are_not_input(browser: Browser) -> None:
    meter = browser.meter()
    assert feed_all(meter, [browser.send(ACK) for _ in range(20)]) == [False] * 20
    assert meter.parsing


def test_a_regular_message_is_input_and_the_keepalives_after_it_are_not(browser: Browser) -> None:
    meter = browser.meter()
    sent = [KEEPALIVE, ACK, REGULAR, KEEPALIVE, ACK, REGULAR, REGULAR, KEEPALIVE]
    assert feed_all(meter, [browser.send(m) for m in sent]) == [
        False, False, True, False, False, True, True, False]


def test_a_regular_message_on_a_connection_of_unknown_type_is_input(browser: Browser) -> None:
    """Without the handshake (or with a type not understood) a Regular message is not read."""
    meter = browser.meter()
    assert feed_all(meter, [browser.send(m) for m in [PING, KEEPALIVE, PING]]) == [
        True, False, True]
    assert meter.connection is None
    assert meter.last == Seen("unknown", "unjudged", "", True)


@pytest.mark.parametrize("kind", [MessageType.DISCONNECT, MessageType.REPLAY_REQUEST,
                                  MessageType.PAUSE, MessageType.RESUME])
def test_the_protocols_other_upkeep_is_not_input(browser: Browser, kind: int) -> None:
    meter = browser.meter()
    assert feed_all(meter, [browser.send(msg(kind)), browser.send(REGULAR)]) == [False, True]


def test_several_messages_in_one_frame(browser: Browser) -> None:
    meter = browser.meter()
    assert meter.feed(browser.send(KEEPALIVE + ACK + KEEPALIVE + ACK)) is False
    assert meter.feed(browser.send(ACK + REGULAR + KEEPALIVE)) is True
    assert meter.feed(browser.send(KEEPALIVE + ACK)) is False  # still in step


def test_message_data_is_skipped_across_frames(browser: Browser) -> None:
    """VS Code's stream is not cut where the ws messages are: a Regular message's data (here
    made of what would look like Regular headers) runs on into the next ws message."""
    big = msg(MessageType.REGULAR, ident=8, data=REGULAR * 40)
    meter = browser.meter()
    assert meter.feed(browser.send(big[:100])) is True
    assert meter.feed(browser.send(big[100:300])) is False
    assert meter.feed(browser.send(big[300:] + KEEPALIVE)) is False
    # a header cut between ws messages
    assert meter.feed(browser.send(KEEPALIVE + REGULAR[:5])) is False
    assert meter.feed(browser.send(REGULAR[5:])) is True
    assert meter.feed(browser.send(KEEPALIVE[:12])) is False
    assert meter.feed(browser.send(KEEPALIVE[12:] + ACK)) is False
    assert meter.parsing


@pytest.mark.parametrize("cuts", [(), (1,), (700, 1301), tuple(range(97, 2700, 97))])
def test_long_frames_of_many_messages(browser: Browser, cuts: tuple[int, ...]) -> None:
    """Long frames (their headers are unmasked one by one) holding many messages, at every
    offset mod 4 (a keep-alive is 13 bytes), fed whole or in pieces."""
    quiet = b"".join([KEEPALIVE, ACK] * 50)
    busy = quiet + REGULAR + quiet
    wire = browser.send(quiet) + browser.send(busy) + browser.send(quiet)
    meter = browser.meter()
    bounds = [0, *cuts, len(wire)]
    results = [meter.feed(wire[a:b]) for a, b in itertools.pairwise(bounds)]
    assert results.count(True) == 1
    assert meter.feed(browser.send(quiet)) is False


@pytest.mark.parametrize("size", [0, 100, 126, 65535, 65536, 300_000])
def test_frame_lengths(browser: Browser, size: int) -> None:
    """7-, 16- and 64-bit payload lengths (of the bytes on the wire: a compressed message of
    this data is short, so only the plain mode reaches the long forms)."""
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    wire = browser.send(msg(MessageType.REGULAR, ident=1, data=data))
    if not browser.deflate:
        assert wire[1] & 0x7F == (127 if size + 13 > 65535 else 126 if size + 13 > 125
                                  else size + 13)
    meter = browser.meter()
    assert meter.feed(wire) is True
    assert meter.feed(browser.send(KEEPALIVE)) is False


# -- fragments and control frames ---------------------------------------------------------------
def test_fragmented_messages(browser: Browser) -> None:
    meter = browser.meter()
    assert meter.feed(browser.send(KEEPALIVE + ACK + REGULAR + KEEPALIVE, (1, 5, 9, 20))) is True
    assert meter.feed(browser.send(KEEPALIVE + ACK + KEEPALIVE, (1, 3))) is False
    assert meter.feed(browser.send(ACK)) is False
    # empty first and last frames (the message's end is then a frame of its own)
    assert meter.feed(browser.send(KEEPALIVE + ACK, (0, 3, 1 << 30))) is False
    assert meter.feed(browser.send(REGULAR, (0, 1 << 30))) is True
    assert meter.feed(browser.send(KEEPALIVE + ACK)) is False
    assert meter.parsing


def test_fragments_fed_one_by_one() -> None:
    """A message's header cut between fragments: the Regular one completes in the third."""
    meter = InputMeter()
    wire = Browser().send(KEEPALIVE + REGULAR + ACK, (13, 18, 30))
    frames, at = [], 0
    while at < len(wire):
        n = wire[at + 1] & 0x7F
        frames.append(wire[at:at + 6 + n])
        at += 6 + n
    assert len(frames) == 4
    assert feed_all(meter, frames) == [False, False, True, False]


def test_control_frames_are_not_input_even_inside_a_fragmented_message(browser: Browser) -> None:
    ping = frame(REGULAR[:20], opcode=0x9)  # (a payload that looks like a Regular header)
    pong = frame(REGULAR[:20], opcode=0xA)
    meter = browser.meter()
    assert meter.feed(ping) is False
    assert meter.feed(pong) is False
    wire = browser.send(KEEPALIVE + ACK, (2,))
    first_len = 6 + (wire[1] & 0x7F)
    assert meter.feed(wire[:first_len] + ping + pong + wire[first_len:]) is False
    assert meter.feed(browser.send(REGULAR)) is True
    assert meter.feed(frame(struct.pack(">H", 1001), opcode=0x8)) is False  # close
    assert meter.parsing


# -- cut anywhere -------------------------------------------------------------------------------
def no_input_at_any_cut(browser: Browser, wire: bytes, after: bytes) -> None:
    """wire in two pieces, cut at each byte, to a new meter each time: never input; what comes
    after (a person's call) is."""
    for cut in range(len(wire) + 1):
        meter = InputMeter(browser.extensions)
        assert [meter.feed(wire[:cut]), meter.feed(wire[cut:])] == [False, False]
        assert meter.feed(after) is True, cut


def input_once_at_any_cut(browser: Browser, wire: bytes, after: bytes) -> None:
    """wire (one person's call among the rest), cut at each byte: input exactly once; what
    comes after (no call) is not."""
    for cut in range(len(wire) + 1):
        meter = InputMeter(browser.extensions)
        results = [meter.feed(wire[:cut]), meter.feed(wire[cut:])]
        assert results.count(True) == 1, cut
        assert meter.feed(after) is False, cut


def test_cut_at_every_byte_boundary(browser: Browser) -> None:
    """Two pieces, cut at each byte: the same bytes replayed to a new meter each time."""
    quiet = Browser(browser.extensions)
    quiet_wire = b"".join([quiet.send(KEEPALIVE), quiet.send(ACK + KEEPALIVE, (3,)),
                           frame(b"hi", opcode=0x9), quiet.send(ACK)])
    after_quiet = quiet.send(REGULAR)
    no_input_at_any_cut(browser, quiet_wire, after_quiet)
    busy = Browser(browser.extensions)
    busy_wire = b"".join([busy.send(KEEPALIVE + REGULAR[:20]), busy.send(REGULAR[20:] + ACK)])
    after_busy = busy.send(KEEPALIVE)
    input_once_at_any_cut(browser, busy_wire, after_busy)


def test_byte_by_byte(browser: Browser) -> None:
    """Every byte on its own (in the plain mode over a 64-bit length): input is seen exactly
    once per Regular message."""
    big = msg(MessageType.REGULAR, ident=3, data=bytes(range(256)) * 300)
    wire = b"".join([browser.send(KEEPALIVE), browser.send(big, (2, 300)),
                     browser.send(ACK + KEEPALIVE), browser.send(REGULAR)])
    meter = browser.meter()
    results = [meter.feed(wire[i:i + 1]) for i in range(len(wire))]
    assert results.count(True) == 2
    assert meter.parsing


# -- compression --------------------------------------------------------------------------------
def test_context_takeover_keeps_the_window_across_messages() -> None:
    """With context takeover (VS Code's server's only offer) a message refers back to earlier
    ones: the 20th keep-alive is a few bytes, readable only with the window kept."""
    browser = Browser("permessage-deflate")
    sent = [browser.send(KEEPALIVE) for _ in range(20)]
    assert len(sent[-1]) < len(sent[0])
    meter = browser.meter()
    assert feed_all(meter, sent) == [False] * 20
    assert meter.parsing


def test_client_no_context_takeover_is_honoured() -> None:
    """Under client_no_context_takeover each message starts a new window: a message that
    refers back (a client breaking the agreement) does not parse, and so counts."""
    rogue = Browser("permessage-deflate")  # keeps its window though told not to
    sent = [rogue.send(KEEPALIVE) for _ in range(3)]
    meter = InputMeter("permessage-deflate; client_no_context_takeover")
    assert meter.feed(sent[0]) is False
    assert meter.feed(sent[1] + sent[2]) is True
    assert not meter.parsing


@pytest.mark.parametrize("header", ["permessage-deflate",
                                    "permessage-deflate; client_no_context_takeover"])
def test_a_message_may_end_its_deflate_stream(header: str) -> None:
    """A sender may end a message with a BFINAL block (and then nothing to strip)."""
    def finished(payload: bytes) -> bytes:
        deflater = zlib.compressobj(wbits=-15)
        return deflater.compress(payload) + deflater.flush(zlib.Z_FINISH)

    meter = InputMeter(header)
    sent = [KEEPALIVE + ACK, KEEPALIVE, REGULAR, ACK]
    assert feed_all(meter, [frame(finished(m), rsv1=True) for m in sent]) == [
        False, False, True, False]
    # (the end of a deflate stream is the end of the message: more after it does not parse)
    assert meter.feed(frame(finished(KEEPALIVE) + b"\x00", rsv1=True)) is True
    assert not meter.parsing


@pytest.mark.parametrize("bits", [9, 10, 12])
def test_small_client_windows(bits: int) -> None:
    browser = Browser(f"permessage-deflate; client_max_window_bits={bits}", bits=bits)
    meter = browser.meter()
    data = bytes(range(256)) * 64
    sent = [KEEPALIVE, msg(MessageType.REGULAR, ident=1, data=data), KEEPALIVE, ACK]
    assert feed_all(meter, [browser.send(m) for m in sent]) == [False, True, False, False]


def test_the_header_forms_a_101_may_carry() -> None:
    for header in ["permessage-deflate; client_max_window_bits=15; server_no_context_takeover",
                   "PerMessage-Deflate ;client_max_window_bits=\"15\"",
                   "x-webkit-deflate-frame"]:
        browser = Browser(header)
        meter = browser.meter()
        assert feed_all(meter, [browser.send(KEEPALIVE), browser.send(REGULAR),
                                browser.send(KEEPALIVE)]) == [False, True, False], header
    for header in ["", None]:
        meter = InputMeter(header)
        assert meter.parsing and not meter.deflate
        assert meter.feed(Browser().send(KEEPALIVE)) is False


def test_a_compressed_message_is_inflated_in_bounded_pieces() -> None:
    """A message that inflates to 32 MiB is metered without holding it."""
    browser = Browser("permessage-deflate")
    huge = msg(MessageType.REGULAR, ident=1, data=bytes(32 << 20))
    wire = browser.send(huge) + browser.send(KEEPALIVE)
    meter = browser.meter()
    tracemalloc.start()
    try:
        assert meter.feed(wire) is True
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < len(wire) * 4 + (1 << 20)
    assert meter.feed(browser.send(KEEPALIVE)) is False


# -- what is not the protocol -------------------------------------------------------------------
KA = frame(KEEPALIVE)
NOT_PROTOCOL = {
    "text frame": frame(b'{"event":"health"}', opcode=0x1),  # code-server's /healthz
    "text frame of protocol bytes": frame(KEEPALIVE, opcode=0x1),  # not VS Code's client
    "unmasked frame": frame(KEEPALIVE, masked=False),
    "unknown message type": frame(msg(4)),
    "type None": frame(msg(MessageType.NONE)),
    "keep-alive with data": frame(msg(MessageType.KEEP_ALIVE, data=b"x")),
    "ack with an id": frame(msg(MessageType.ACK, ident=5)),
    "RSV1 without deflate": frame(KEEPALIVE, rsv1=True),
    "RSV2": bytes([0xA2]) + frame(KEEPALIVE)[1:],
    "continuation first": frame(KEEPALIVE, opcode=0x0),
    "new message inside a fragmented one": frame(KEEPALIVE, fin=False) + KA,
    "reserved opcode": frame(KEEPALIVE, opcode=0x3),
    "fragmented ping": frame(b"", opcode=0x9, fin=False),
    "long ping": frame(b"p" * 126, opcode=0x9),
    "random bytes": bytes(range(7, 250, 3)),
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
}


@pytest.mark.parametrize("wire", list(NOT_PROTOCOL.values()), ids=list(NOT_PROTOCOL))
def test_what_is_not_the_protocol_counts_and_so_does_all_after_it(wire: bytes) -> None:
    meter = InputMeter()
    assert meter.feed(KA) is False
    assert meter.feed(wire) is True
    assert not meter.parsing
    assert [meter.feed(KA), meter.feed(KA)] == [True, True]


def test_garbage_in_a_compressed_message_counts() -> None:
    meter = InputMeter("permessage-deflate")
    assert meter.feed(frame(b"\xff\xff\xff\xff\xff", rsv1=True)) is True
    assert meter.feed(Browser("permessage-deflate").send(KEEPALIVE)) is True


@pytest.mark.parametrize("header", ["permessage-deflate; client_max_window_bits=7",
                                    "permessage-deflate; mystery",
                                    "permessage-deflate, permessage-deflate",
                                    "permessage-foo",
                                    "permessage-deflate, x-something"])
def test_an_extension_not_understood_makes_everything_count(header: str) -> None:
    meter = InputMeter(header)
    assert not meter.parsing
    assert meter.feed(KA) is True




# -- the handshake --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(ConnectionType))
def test_the_handshake_is_not_input_and_tells_the_connection(browser: Browser,
                                                               kind: ConnectionType) -> None:
    """auth then connectionType, each in its own ws message or both in one: no input (a
    reconnection sends them with no person there); the connection's type is kept."""
    meter = browser.meter()
    assert feed_all(meter, [browser.send(AUTH), browser.send(connection_type(kind))]) == [
        False, False]
    assert meter.connection == kind
    assert meter.last == Seen(wsinput._CONNECTIONS[kind], "control", "connectionType", False)
    other = Browser(browser.extensions)  # (a new socket: a new compression context)
    again = other.meter()
    assert again.feed(other.send(AUTH + connection_type(kind) + KEEPALIVE)) is False
    assert again.connection == kind
    assert again.seen == {Seen("unknown", "control", "auth", False): 1,
                          Seen(wsinput._CONNECTIONS[kind], "control", "connectionType",
                               False): 1}


def test_a_long_handshake_is_read_from_its_first_bytes(browser: Browser) -> None:
    """An ExtensionHost handshake carries the start parameters (its env may be long): the type
    comes before them, read from the first 4 KiB; the rest is skipped, in step."""
    hello = connection_type(ConnectionType.EXTENSION_HOST, language="en",
                            env={f"VAR{i}": "v" * 90 for i in range(100)})
    assert len(hello) > 2 * wsinput._CONTROL_PEEK
    meter = browser.meter()
    assert feed_all(meter, [browser.send(AUTH), browser.send(hello[:5000]),
                            browser.send(hello[5000:] + KEEPALIVE)]) == [False, False, False]
    assert meter.connection == ConnectionType.EXTENSION_HOST
    assert meter.feed(browser.send(rpc_reply(5))) is False
    assert meter.feed(browser.send(TYPED)) is True


@pytest.mark.parametrize("hello", [
    control({"type": "connectionType", "desiredConnectionType": "1"}),  # not a number
    control({"type": "connectionType"}),
    control({"type": "auth", "desiredConnectionType": 1}),
    msg(MessageType.CONTROL, data=b'{"type":"connectionType","desiredConnectionType":1'),  # cut
    msg(MessageType.CONTROL, data=b"[" * 3000),
    msg(MessageType.CONTROL, data=b'{"type":"connectionType",' + b"x" * 5000),
    msg(MessageType.CONTROL),
])
def test_a_handshake_not_understood_leaves_the_connection_unknown(hello: bytes) -> None:
    meter = InputMeter()
    assert meter.feed(frame(AUTH + hello)) is False
    assert meter.connection is None and meter.parsing
    assert meter.feed(frame(PING)) is True  # (then every Regular message counts)


# -- a Management connection: IPC -------------------------------------------------------------
MANAGEMENT_QUIET = {
    # the remote agent service's telemetry channel: latency pings, telemetry
    "telemetry ping": PING,
    "telemetry log": call("telemetry", "logTelemetry", {"eventName": "x", "data": {"a": 1}}),
    "telemetry flush": call("telemetry", "flushTelemetry"),
    # the workbench's own state on the remote file system (an idle tab in Chromium: the chat
    # editing session's state.json, read and written every 5 s)
    "state stat": call("remoteFilesystem", "stat", {"$mid": 1, "scheme": "vscode-remote",
                                                    "path": "/home/a/state.json"}),
    "state write": call("remoteFilesystem", "writeFile", ["/home/a/state.json", b"{}"]),
    "state readdir": call("remoteFilesystem", "readdir", "/home/a"),
    # responses to the server's calls into the browser (its "download" channel...), events
    "initialize": response(200),
    "success": response(201, data={"ok": 1}),
    "error": response(202, data={"message": "no"}),
    "error object": response(203, data={"x": 1}),
    "event": response(204, data="e"),
    "cancel": response(101),
    "dispose": response(103),
    # echoes of the terminal's output and title, replies to the pty host
    "terminal ack": call("remoteterminal", "$acknowledgeDataEvent", [1, 5000]),
    "terminal title": call("remoteterminal", "$updateTitle", [1, "python", 1]),
    "terminal orphan reply": call("remoteterminal", "$orphanQuestionReply", [1]),
    # the agent host's liveness ping, its replies, its transport (re)connecting
    "agent host ping": agent_host({"jsonrpc": "2.0", "id": 12, "method": "ping",
                                   "params": {"channel": "ahp-root://"}}),
    "agent host reply": agent_host({"jsonrpc": "2.0", "id": 4, "result": {"ok": True}}),
    "agent host error": agent_host({"jsonrpc": "2.0", "id": 5, "error": {"code": -1}}),
    "agent host connect": call("agentHostProxy", "connect"),
    "agent host listen": call("agentHostProxy", "frame", kind=102),
}
MANAGEMENT_INPUT = {
    "file stat": REGULAR,
    "terminal keys": call("remoteterminal", "$input", [1, "ls\r"]),
    "terminal resize": call("remoteterminal", "$resize", [1, 80, 24]),
    "listen": call("remoteterminal", "$onProcessDataEvent", kind=102),
    "IPC context": regular(ser({"remoteAuthority": "localhost:8080", "clientId": "c1"})),
    "agent host request": agent_host({"jsonrpc": "2.0", "id": 6, "method": "createSession",
                                      "params": {}}),
    "agent host notification": agent_host({"jsonrpc": "2.0", "method": "dispatchAction",
                                           "params": {}}),
    "a long call": call("remoteterminal", "$input", [1, "x" * 100_000]),
    "an id of 5 bytes": call("remoteterminal", "$input", [1, "l"], ident=1 << 31),
}


@pytest.mark.parametrize("name", list(MANAGEMENT_QUIET))
def test_what_an_idle_workbench_sends_is_not_input(browser: Browser, name: str) -> None:
    meter = browser.meter(MANAGEMENT)
    sent = [MANAGEMENT_QUIET[name], KEEPALIVE, MANAGEMENT_QUIET[name], ACK, REGULAR]
    assert feed_all(meter, [browser.send(m) for m in sent]) == [False] * 4 + [True]
    assert meter.parsing


@pytest.mark.parametrize("name", list(MANAGEMENT_INPUT))
def test_what_a_person_causes_is_input(browser: Browser, name: str) -> None:
    meter = browser.meter(MANAGEMENT)
    sent = [PING, MANAGEMENT_INPUT[name], KEEPALIVE, PING]
    assert feed_all(meter, [browser.send(m) for m in sent]) == [False, True, False, False]
    assert meter.parsing


def test_what_is_seen_is_named(browser: Browser) -> None:
    meter = browser.meter(MANAGEMENT)
    for m in [PING, PING, response(201), MANAGEMENT_INPUT["terminal keys"],
              MANAGEMENT_QUIET["agent host ping"], MANAGEMENT_INPUT["agent host request"]]:
        meter.feed(browser.send(m))
    assert meter.seen == {
        Seen("unknown", "control", "auth", False): 1,
        Seen("management", "control", "connectionType", False): 1,
        Seen("management", "request", "telemetry.ping", False): 2,
        Seen("management", "response", "", False): 1,
        Seen("management", "request", "remoteterminal.$input", True): 1,
        Seen("management", "request", "agentHostProxy.send:ping", False): 1,
        Seen("management", "request", "agentHostProxy.send:createSession", True): 1,
    }
    assert meter.last == Seen("management", "request", "agentHostProxy.send:createSession", True)


GARBAGE = {
    "empty": regular(b""),
    "not a header": regular(b"\x07\x01\x02"),
    "a String header": regular(ser("hello") + ser(None)),
    "unknown request type": regular(ser([105, 1, "a", "b"]) + ser(None)),
    "request of 3": regular(ser([100, 1, "telemetry"]) + ser(None)),
    "a number for a channel": regular(ser([100, 1, 5, "ping"]) + ser(None)),
    "cut in the channel": regular(b"\x04\x04\x06\x64\x06\x01\x01\x09tele"),
    "VQL of 6 bytes": regular(b"\x04\x04\x06" + b"\xff" * 5 + b"\x01"),
    "a response of 3": regular(ser([201, 1, 2]) + ser(None)),
    "the rpc protocol": TYPED,
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_a_regular_message_that_does_not_parse_is_input(browser: Browser, name: str) -> None:
    """It counts, and the meter goes on judging the next ones."""
    meter = browser.meter(MANAGEMENT)
    assert feed_all(meter, [browser.send(GARBAGE[name]), browser.send(PING)]) == [True, False]
    assert meter.seen[Seen("management", "unparsed", "", True)] == 1
    assert meter.parsing


def test_only_the_first_bytes_are_read(browser: Browser) -> None:
    """A long message is judged by its first 256 bytes (a channel name past them cannot be
    read: the message counts); its data is skipped across ws messages, in step."""
    logged = call("telemetry", "logTelemetry", {"eventName": "e", "data": "x" * 300_000})
    long_name = call("telemetry" + "y" * 300, "ping")
    meter = browser.meter(MANAGEMENT)
    assert meter.feed(browser.send(logged[:1000])) is False
    assert meter.last == Seen("management", "request", "telemetry.logTelemetry", False)
    assert len(meter._peek) == 0  # (judged: nothing kept)
    assert feed_all(meter, [browser.send(logged[1000:200_000]),
                            browser.send(logged[200_000:] + PING)]) == [False] * 2
    assert feed_all(meter, [browser.send(long_name), browser.send(PING)]) == [True, False]
    assert len(meter._peek) == 0


def test_a_header_cut_anywhere(browser: Browser) -> None:
    """A ping and a person's call, each cut across ws messages and chunks at every byte: the
    ping is never input, the call is, once."""
    quiet = Browser(browser.extensions)
    quiet_wire = (quiet.send(MANAGEMENT) + quiet.send(KEEPALIVE + PING[:20])
                  + quiet.send(PING[20:] + PING, (9,)))
    after_quiet = quiet.send(REGULAR)
    no_input_at_any_cut(browser, quiet_wire, after_quiet)
    busy = Browser(browser.extensions)
    busy_wire = busy.send(MANAGEMENT) + busy.send(PING + REGULAR[:30]) + busy.send(REGULAR[30:])
    after_busy = busy.send(PING)
    input_once_at_any_cut(browser, busy_wire, after_busy)


def test_byte_by_byte_judged(browser: Browser) -> None:
    wire = b"".join([browser.send(MANAGEMENT), browser.send(PING + KEEPALIVE, (7,)),
                     browser.send(REGULAR), browser.send(response(201) + PING)])
    meter = InputMeter(browser.extensions)
    assert [meter.feed(wire[i:i + 1]) for i in range(len(wire))].count(True) == 1
    assert meter.seen[Seen("management", "request", "telemetry.ping", False)] == 2


@pytest.mark.parametrize("cuts", [(), (1,), (700, 1301), tuple(range(97, 2700, 97))])
def test_long_frames_of_many_judged_messages(browser: Browser, cuts: tuple[int, ...]) -> None:
    """Long frames (unmasked only where read) of many messages at every offset mod 4, fed
    whole or in pieces; every one judged with judge_all."""
    quiet = b"".join([KEEPALIVE, PING, ACK, response(201, data="r" * 300)] * 20)
    wire = (browser.send(MANAGEMENT) + browser.send(quiet) + browser.send(quiet + REGULAR + quiet)
            + browser.send(quiet))
    after = browser.send(quiet)
    bounds = [0, *cuts, len(wire)]
    for meter in [InputMeter(browser.extensions), InputMeter(browser.extensions, judge_all=True)]:
        assert [meter.feed(wire[a:b]) for a, b in itertools.pairwise(bounds)].count(True) == 1
        assert meter.feed(after) is False
        assert meter.parsing
    assert meter.seen[Seen("management", "request", "telemetry.ping", False)] == 100
    assert meter.seen[Seen("management", "response", "", False)] == 100


def test_after_input_the_rest_of_the_data_is_not_read() -> None:
    """Once the data fed holds input, the Regular messages after it are skipped unread (so not
    in ``seen``), unless judge_all."""
    wire = Browser().send(MANAGEMENT) + Browser().send(REGULAR + PING + PING)
    fast, full = InputMeter(), InputMeter(judge_all=True)
    assert fast.feed(wire) is True and full.feed(wire) is True
    ping = Seen("management", "request", "telemetry.ping", False)
    assert ping not in fast.seen
    assert full.seen[ping] == 2
    assert fast.feed(Browser().send(PING)) is False  # (in step)
    assert fast.seen[ping] == 1


def test_what_is_seen_is_bounded() -> None:
    meter = InputMeter()
    meter.feed(frame(MANAGEMENT))
    for i in range(500):
        assert meter.feed(frame(call(f"channel{i}" + "c" * 200, "x"))) is True
    assert len(meter.seen) == wsinput._SEEN_KEYS + 1
    more = Seen("management", "request", "(more)", True)
    assert meter.seen[more] == 500 - (wsinput._SEEN_KEYS - 2)  # (the handshake is 2 of them)
    assert max(len(seen.name) for seen in meter.seen) <= 2 * wsinput._NAME_CHARS + 1


# -- an ExtensionHost connection: RPC ---------------------------------------------------------
EXTENSION_HOST_QUIET = {
    "ack": rpc_reply(5),
    "cancel": rpc_reply(6),
    "reply empty": rpc_reply(7),
    "reply buffer": rpc_reply(8, payload=(3).to_bytes(4, "big") + b"abc"),
    "reply JSON": rpc_reply(9, payload=(11).to_bytes(4, "big") + b'{"a":[1,2]}'),
    "reply JSON with buffers": rpc_reply(10, payload=bytes(4) + (2).to_bytes(4, "big") + b"{}"),
    "reply error": rpc_reply(11, payload=(2).to_bytes(4, "big") + b"{}"),
    "reply error empty": rpc_reply(12),
    "diagnostics echo": rpc("$acceptMarkersChange", [[["file:///a", []]]]),
    "file watcher": rpc("$onFileEvent", [{"created": [], "changed": ["file:///a"]}]),
    "terminal output": rpc("$acceptTerminalProcessData", [1, "x" * 500]),
    "shell execution output": rpc("$shellExecutionData", [1, "y"], kind=3),
}
EXTENSION_HOST_INPUT = {
    "typing": TYPED,
    "typing, mixed args": rpc("$acceptModelChanged", ["file:///a", {"versionId": 4}], kind=3),
    "hover": rpc("$provideHover", [1, "file:///a", {"lineNumber": 1}], kind=2),
    "a command": rpc("$executeContributedCommand", ["git.commit", []], kind=4),
    "window focus": rpc("$onDidChangeWindowFocus", [True]),
    "init data": regular(b'{"commit":"c","version":"1.139.1"}'),  # (once, before the RPCs)
    "terminate": regular(b"\x03"),
    "a method cut": regular(b"\x01\x00\x00\x00\x01\x07\x20$accept"),
    "an unknown type": rpc_reply(13),
    "an ack with data": rpc_reply(5, payload=b"x"),
}


@pytest.mark.parametrize("name", list(EXTENSION_HOST_QUIET))
def test_what_the_main_thread_sends_by_itself_is_not_input(browser: Browser, name: str) -> None:
    meter = browser.meter(EXTENSION_HOST)
    sent = [EXTENSION_HOST_QUIET[name], KEEPALIVE, EXTENSION_HOST_QUIET[name], TYPED]
    assert feed_all(meter, [browser.send(m) for m in sent]) == [False, False, False, True]


@pytest.mark.parametrize("name", list(EXTENSION_HOST_INPUT))
def test_what_the_main_thread_sends_for_a_person_is_input(browser: Browser, name: str) -> None:
    meter = browser.meter(EXTENSION_HOST)
    sent = [rpc_reply(5), EXTENSION_HOST_INPUT[name], rpc_reply(9, payload=bytes(4))]
    assert feed_all(meter, [browser.send(m) for m in sent]) == [False, True, False]


def test_rpc_requests_are_named(browser: Browser) -> None:
    meter = browser.meter(EXTENSION_HOST)
    for m in [TYPED, rpc_reply(5), rpc("$onFileEvent", [{}], rpc_id=40)]:
        meter.feed(browser.send(m))
    assert meter.seen == {
        Seen("unknown", "control", "auth", False): 1,
        Seen("extensionHost", "control", "connectionType", False): 1,
        Seen("extensionHost", "request", "#7.$acceptModelChanged", True): 1,
        Seen("extensionHost", "ack", "", False): 1,
        Seen("extensionHost", "request", "#40.$onFileEvent", False): 1,
    }


def test_the_connection_decides_how_a_message_is_read(browser: Browser) -> None:
    """A telemetry ping on an ExtensionHost connection is read as RPC: no ping there."""
    meter = browser.meter(EXTENSION_HOST)
    assert meter.feed(browser.send(PING)) is True
    assert meter.last is not None and meter.last.name != "telemetry.ping"


@pytest.mark.parametrize("hello", [connection_type(ConnectionType.TUNNEL, host="h", port=22),
                                   connection_type(7)])
def test_tunnels_and_unknown_connections_count(browser: Browser, hello: bytes) -> None:
    meter = browser.meter(AUTH + hello)
    assert feed_all(meter, [browser.send(m) for m in [PING, KEEPALIVE, rpc_reply(5)]]) == [
        True, False, True]
    assert meter.last is not None and meter.last.kind == "unjudged"


def test_a_reconnection_is_judged_like_the_first_connection(browser: Browser) -> None:
    """A reconnection is a new socket: the handshake again (no input), then the messages not
    acknowledged are replayed with their ids, judged as before."""
    first = browser.meter(MANAGEMENT)
    assert first.feed(browser.send(call("telemetry", "ping", ident=5))) is False
    assert first.feed(browser.send(call("remoteterminal", "$input", [1, "x"], ident=6))) is True
    again = Browser(browser.extensions)
    meter = again.meter()
    assert meter.feed(again.send(MANAGEMENT)) is False
    assert meter.feed(again.send(call("telemetry", "ping", ident=5))) is False
    assert meter.feed(again.send(call("remoteterminal", "$input", [1, "x"], ident=6))) is True
