"""Whether the bytes a browser sends to VS Code over a websocket carried what a person did in the
workbench, or only what an idle workbench sends by itself: an incremental, pure meter for the
proxy's browser->IDE leg (the proxy relays the websocket as raw bytes, so it sees the browser's
RFC 6455 frames). It serves the idle auto-cancel: a focused tab left open over a weekend must
look idle.

What is on that websocket (read in the VS Code 1.139 that code-server 4.139 ships):

* The workbench's ``BrowserSocketFactory`` opens ``...?reconnectionToken=..&reconnection=..
  &skipWebSocketFrames=false`` and sends binary frames only (``WebSocket.send`` of the bytes).
  The token travels in the URL; nothing precedes the protocol stream, whose first message is
  the handshake. The frames carry VS Code's ``PersistentProtocol`` as a byte stream: a message
  may span frames and a frame may hold several messages. A message is a 13-byte big-endian
  header, type (u8), id (u32), ack (u32), data length (u32), then the data.
* Types (``ProtocolMessageType``, ipc.net.ts): None=0, Regular=1, Control=2, Ack=3,
  Disconnect=5, ReplayRequest=6, Pause=7, Resume=8, KeepAlive=9. The client sends a KeepAlive
  every 5 s and an Ack some 2 s after receiving Regular messages, whether or not anyone is
  there; these and Disconnect, ReplayRequest, Pause and Resume go with id 0 and no data.
* Control messages are the handshake of each connection and reconnection, JSON:
  ``{"type":"auth",...}`` then ``{"type":"connectionType","commit":..,"signedData":..,
  "desiredConnectionType":N[,"args":..]}``, N a ``ConnectionType``: Management=1,
  ExtensionHost=2, Tunnel=3. They are no input (a reconnection needs no person); the meter
  keeps N (from at most _CONTROL_PEEK bytes of the message).
* Regular messages on a Management connection are IPC (ipc.ts): a header value then a body
  value, each ``serialize()``d: a DataType byte (Undefined=0, String=1, Buffer=2, VSBuffer=3,
  Array=4, Object=5, Uint=6) then, as VQL (7 bits a byte, low first, 0x80 = more), the length
  (String, Buffer, VSBuffer, Object: JSON text), the count (Array) or the value (Uint). A
  request's header is ``[type, id, channelName, name]`` (Promise=100, EventListen=102), a
  cancel's or dispose's ``[type, id]`` (101, 103), a response's ``[200]`` or ``[type, id]``
  (PromiseSuccess=201, PromiseError=202, PromiseErrorObj=203, EventFire=204). The first message
  is the IPC client's context, a lone Object value.
* Regular messages on an ExtensionHost connection are the RPCProtocol's (rpcProtocol.ts): type
  (u8), request id (u32 BE), then for a request (RequestJSONArgs=1, ..WithCancellation=2,
  RequestMixedArgs=3, ..WithCancellation=4) the proxy id (u8) and the method as a short string
  (u8 length, bytes), then the arguments; Acknowledged=5, Cancel=6 and the replies (7-12:
  ReplyOKEmpty, ReplyOKVSBuffer, ReplyOKJSON, ReplyOKJSONWithBuffers, ReplyErrError,
  ReplyErrEmpty) carry no method. Before the RPCs the browser sends the extension host's init
  data (JSON text) once, and a 1-byte Terminate when it stops it.
* VS Code's server takes permessage-deflate only with its defaults (15 bits, context
  takeover); it also grants ``x-webkit-deflate-frame``, which it then reads exactly like
  permessage-deflate (compression is per message, flagged on the first frame), as does this
  meter. It treats text frames as data too, but the workbench sends none.

What counts as input: a Regular message, judged by the first _REGULAR_PEEK bytes of its data.
Not input: keep-alives and the other upkeep messages, Control messages, ping/pong/close frames,
IPC responses, cancels and disposes, RPC acks, cancels and replies, and the calls an idle
workbench makes by itself (_IPC_AUTOMATIC, _AGENT_HOST_AUTOMATIC, _RPC_AUTOMATIC: the
latency ``ping`` on the ``telemetry`` channel every 60 s while the tab has focus, the agent
host's liveness ping, echoes of the server's own events such as terminal output, diagnostics
and file changes). Every other IPC request or event listen and every other RPC request counts,
and so does a Regular message on a connection whose type is unknown (no handshake seen) or a
Tunnel, and a Regular message whose data does not parse (the safe side). Anything that is not
this protocol counts too: a text frame (code-server's ``/healthz`` socket speaks text; sockets
of apps behind code-server's port proxy speak anything), an unknown message type, an upkeep
message with an id or data, a frame that breaks RFC 6455, an extension not understood. The
meter then stops parsing and every later chunk counts as input, so a parser mismatch never
makes a websocket in use look idle.

For a debug log: ``last`` is the latest message judged (a ``Seen``: connection, kind, name,
input) and ``seen`` counts them by that tuple (at most _SEEN_KEYS names, then "(more)").

Cost: message data is skipped by counting, not read, but for its first bytes (at most
_REGULAR_PEEK of a Regular message, _CONTROL_PEEK of a Control one, kept until judged); a long
uncompressed frame is not even unmasked, only the headers and those first bytes in it; between
chunks at most a message header (13 bytes), a frame header (14) and those first bytes are kept.
Compressed frames are inflated in bounded pieces, each parsed and dropped.
"""

from __future__ import annotations

import enum
import json
import re
import struct
import zlib
from typing import NamedTuple


class MessageType(enum.IntEnum):
    """VS Code's ``ProtocolMessageType`` (src/vs/base/parts/ipc/common/ipc.net.ts)."""

    NONE = 0
    REGULAR = 1
    CONTROL = 2
    ACK = 3
    DISCONNECT = 5
    REPLAY_REQUEST = 6
    PAUSE = 7
    RESUME = 8
    KEEP_ALIVE = 9


class ConnectionType(enum.IntEnum):
    """VS Code's ``ConnectionType`` (src/vs/platform/remote/common/remoteAgentConnection.ts), the
    ``desiredConnectionType`` of a connection's handshake."""

    MANAGEMENT = 1
    EXTENSION_HOST = 2
    TUNNEL = 3


class Seen(NamedTuple):
    """A message as the meter judged it, for a debug log. ``connection``: "management",
    "extensionHost", "tunnel", "unknown" (no handshake seen) or "other"; ``kind``: "control",
    "request", "listen", "cancel", "dispose", "response", "context" (IPC), "request", "ack",
    "cancel", "reply", "lifecycle" (RPC), "unjudged" (a Regular message on a connection not
    understood) or "unparsed"; ``name``: the Control message's type, the IPC request's
    "channel.call" (with ":method" of an agent host frame) or the RPC's "#proxy.method", else "".
    """

    connection: str
    kind: str
    name: str
    input: bool


# The protocol's own upkeep: VS Code sends each with id 0 and no data.
UPKEEP_TYPES = frozenset({MessageType.ACK.value, MessageType.DISCONNECT.value,
                          MessageType.REPLAY_REQUEST.value, MessageType.PAUSE.value,
                          MessageType.RESUME.value, MessageType.KEEP_ALIVE.value})

HEADER = struct.Struct(">BIII")  # type, id, ack, data length
HEADER_LEN = HEADER.size  # 13
_LEN16 = struct.Struct(">H")
_LEN64 = struct.Struct(">Q")
_TAIL = b"\x00\x00\xff\xff"  # RFC 7692: removed by the sender, appended by the receiver
_INFLATE_PIECE = 64 * 1024  # the most inflated output held at once
_UNMASK_WHOLE = 512  # a smaller piece of a plain frame is unmasked whole, not header by header
_DEFLATE_NAMES = ("permessage-deflate", "x-webkit-deflate-frame")
_TOKEN = re.compile(r'\s*([^\s=;]+)\s*(?:=\s*("[^"]*"|[^\s;]*))?\s*')
_REGULAR_PEEK = 256  # the most of a Regular message's data read (the rest is skipped)
_CONTROL_PEEK = 4096  # the most of a Control message's data read
_SEEN_KEYS = 64  # the most distinct Seen counted by name
_NAME_CHARS = 64  # a name longer than this is cut
_CONNECTIONS = {ConnectionType.MANAGEMENT.value: "management",
                ConnectionType.EXTENSION_HOST.value: "extensionHost",
                ConnectionType.TUNNEL.value: "tunnel"}
_JUDGED = frozenset({"management", "extensionHost"})  # connections whose messages are read
_REGULAR, _CONTROL = MessageType.REGULAR.value, MessageType.CONTROL.value
_DESIRED = re.compile(rb'[{,]"desiredConnectionType":(\d{1,9})[,}]')  # (a handshake cut short)

# IPC (ipc.ts): DataType, RequestType and ResponseType values
_IPC_STRING, _IPC_ARRAY, _IPC_OBJECT, _IPC_UINT = 1, 4, 5, 6
_IPC_REQUEST, _IPC_CANCEL, _IPC_LISTEN, _IPC_DISPOSE = 100, 101, 102, 103
_IPC_INITIALIZE, _IPC_EVENT_FIRE = 200, 204
# Calls (and event listens) on the Management connection that the workbench makes with no person
# involved, by channel (None: every call on it):
_IPC_AUTOMATIC: dict[bytes, frozenset[bytes] | None] = {
    # the remote agent service's _withTelemetryChannel: ping (the remote indicator measures the
    # latency every 60 s while the tab has focus: 5 pings 2 s apart), logTelemetry,
    # flushTelemetry, updateTelemetryLevel
    b"telemetry": None,
    # the remote file system: the workbench's own state goes there on timers (measured with an
    # idle tab in Chromium: the chat editing session's state.json is read and written every
    # 5 s), and what a person does with files comes with other calls too (typing and opening
    # editors reach the extension host, saving follows typing)
    b"remoteFilesystem": None,
    # the terminal's acks of output (one per 5000 characters), title changes (the pty host
    # follows the running process), replies to the pty host's questions
    b"remoteterminal": frozenset({b"$acknowledgeDataEvent", b"$updateTitle",
                                  b"$orphanQuestionReply", b"$acceptPtyHostResolvedVariables",
                                  b"$acceptDetachInstanceReply"}),
    # the agent host's transport (re)connecting: listen frame and close, call connect; a "send"
    # is judged by its JSON-RPC frame (_AGENT_HOST_AUTOMATIC)
    b"agentHostProxy": frozenset({b"connect", b"close", b"frame"}),
}
# JSON-RPC frames sent on agentHostProxy: the liveness ping (5 s after the last frame received,
# so every 5 s), "reconnect"; a response (to the agent host's own requests) is automatic too.
_AGENT_HOST_AUTOMATIC = frozenset({b"ping", b"reconnect"})
_JSONRPC = re.compile(rb'\{"jsonrpc":"2\.0",(?:"id":\d{1,15},)?"(method|result|error)"'
                      rb'(?::"([^"\\]{1,64})")?')
# RPC (rpcProtocol.ts) requests from the main thread that echo what the server did, not a person:
_RPC_AUTOMATIC = frozenset({
    b"$acceptMarkersChange",  # diagnostics (the extension host's own, sent back)
    b"$onFileEvent",  # the server's file watcher
    b"$acceptTerminalProcessData", b"$shellExecutionData",  # terminal output
    b"$acceptTerminalTitleChange",  # a terminal's title, following its process
    b"$onDidSuspend", b"$onDidResume", b"$onDidChangeOnBatteryPower",  # the power service
    b"$onDidChangeThermalState", b"$onDidChangeSpeedLimit", b"$onDidLockScreen",
    b"$onDidUnlockScreen", b"$onDidChangeIsConnectionMetered",
})

# opcodes
_CONT, _TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# -- judging a message by its first bytes ------------------------------------------------------
def _vql(data: bytes, pos: int) -> tuple[int, int]:
    """The VQL (ipc.ts ``readIntVQL``) at ``data[pos]``, and the position after it."""
    value = shift = 0
    while shift <= 28:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("VQL of more than 5 bytes")


def _ipc_string(data: bytes, pos: int) -> tuple[bytes, int]:
    """The serialized String at ``data[pos]`` (whole: ValueError when cut), and the position
    after it."""
    if data[pos] != _IPC_STRING:
        raise ValueError("not a String")
    size, pos = _vql(data, pos + 1)
    if pos + size > len(data):
        raise ValueError("String cut")
    return data[pos:pos + size], pos + size


def _name(raw: bytes) -> str:
    return raw[:_NAME_CHARS].decode("utf-8", "replace")


def _judge_ipc(data: bytes) -> tuple[str, str, bool]:
    """(kind, name, input) of a Management connection's Regular message; ValueError or
    IndexError when it does not parse."""
    if data[0] != _IPC_ARRAY:
        if data[0] == _IPC_OBJECT:  # (the IPC client's context, its first message)
            return "context", "", True
        raise ValueError("not an IPC header")
    count, pos = _vql(data, 1)
    if data[pos] != _IPC_UINT:
        raise ValueError("not an IPC header")
    kind, pos = _vql(data, pos + 1)
    if kind in (_IPC_REQUEST, _IPC_LISTEN):
        if count != 4 or data[pos] != _IPC_UINT:
            raise ValueError("not an IPC request")
        pos = _vql(data, pos + 1)[1]  # (the request's id)
        channel, pos = _ipc_string(data, pos)
        call, pos = _ipc_string(data, pos)
        name = f"{_name(channel)}.{_name(call)}"
        automatic = _IPC_AUTOMATIC.get(channel, frozenset())
        if automatic is None or call in automatic:
            return "request" if kind == _IPC_REQUEST else "listen", name, False
        if channel == b"agentHostProxy" and call == b"send" and kind == _IPC_REQUEST:
            body, pos = data[pos:], 0  # a String: a JSON-RPC frame
            if body[0] != _IPC_STRING:
                raise ValueError("not a String")
            pos = _vql(body, 1)[1]
            match = _JSONRPC.match(body, pos)
            if match is not None:
                field, method = match.group(1), match.group(2) or b""
                name += ":" + (_name(method) if field == b"method" else field.decode())
                if field != b"method" or method in _AGENT_HOST_AUTOMATIC:
                    return "request", name, False
        return "request" if kind == _IPC_REQUEST else "listen", name, True
    if kind in (_IPC_CANCEL, _IPC_DISPOSE):
        if count != 2:
            raise ValueError("not an IPC cancel or dispose")
        return "cancel" if kind == _IPC_CANCEL else "dispose", "", False
    if _IPC_INITIALIZE <= kind <= _IPC_EVENT_FIRE:
        if count != (1 if kind == _IPC_INITIALIZE else 2):
            raise ValueError("not an IPC response")
        return "response", "", False
    raise ValueError(f"IPC message type {kind}")


def _judge_rpc(data: bytes) -> tuple[str, str, bool]:
    """(kind, name, input) of an ExtensionHost connection's Regular message; ValueError or
    IndexError when it does not parse."""
    kind = data[0]
    if len(data) == 1 and 1 <= kind <= 3:  # Initialized, Ready, Terminate (extensionHostProtocol)
        return "lifecycle", ("initialized", "ready", "terminate")[kind - 1], True
    if len(data) < 5:
        raise ValueError("not an RPC message")
    if 1 <= kind <= 4:  # a request: type, req (u32), rpcId (u8), method (u8 length, bytes), args
        size = data[6]
        method = data[7:7 + size]
        if len(method) < size:
            raise ValueError("RPC method cut")
        return "request", f"#{data[5]}.{_name(method)}", method not in _RPC_AUTOMATIC
    if kind in (5, 6, 7, 12):  # (no more than type and req)
        if len(data) != 5:
            raise ValueError("RPC ack, cancel or empty reply with data")
        return ("ack" if kind == 5 else "cancel" if kind == 6 else "reply"), "", False
    if 8 <= kind <= 11:
        return "reply", "", False
    raise ValueError(f"RPC message type {kind}")


class _NotProtocol(Exception):
    """The bytes are not (or no longer) what this meter understands."""


def _parse_extensions(value: str | None) -> tuple[bool, bool, int]:
    """(deflate negotiated, client_no_context_takeover, client_max_window_bits) from a 101's
    ``Sec-WebSocket-Extensions`` (repeated headers joined with ","); _NotProtocol for an
    extension or parameter this meter does not know."""
    deflate, no_takeover, bits = False, False, 15
    for ext in (value or "").split(","):
        if not ext.strip():
            continue
        name, *params = ext.split(";")
        if name.strip().lower() not in _DEFLATE_NAMES or deflate:
            raise _NotProtocol(f"websocket extension {ext.strip()!r}")
        deflate = True
        for param in params:
            match = _TOKEN.fullmatch(param)
            if match is None:
                raise _NotProtocol(f"permessage-deflate parameter {param!r}")
            key, raw = match.group(1).lower(), (match.group(2) or "").strip('"')
            if key == "client_no_context_takeover":
                no_takeover = True
            elif key == "client_max_window_bits":
                if raw:
                    if not raw.isdigit() or not 8 <= int(raw) <= 15:
                        raise _NotProtocol(f"client_max_window_bits={raw}")
                    bits = int(raw)
            elif key not in ("server_no_context_takeover", "server_max_window_bits"):
                raise _NotProtocol(f"permessage-deflate parameter {key!r}")
    return deflate, no_takeover, bits


def _unmask(data: bytes | memoryview, mask: bytes, phase: int) -> bytes:
    """``data`` XOR the mask, ``data[0]`` being payload byte ``phase`` (mod 4) of its frame."""
    n = len(data)
    if phase:
        mask = mask[phase:] + mask[:phase]
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


def _header_key(mask: bytes, phase: int) -> int:
    """The mask over a message header that starts at payload byte ``phase`` (mod 4), as a
    little-endian int to XOR with the header's."""
    return int.from_bytes(((mask[phase:] + mask[:phase]) * 4)[:HEADER_LEN], "little")


class InputMeter:
    """Meters one websocket's browser->IDE bytes; see the module's docstring for what counts.

    ``extensions`` is the ``Sec-WebSocket-Extensions`` of the IDE's 101 answer (None or "" when
    there is none). ``feed`` takes the bytes as they arrive, cut anywhere. ``parsing`` is False
    once the bytes did not parse (or the 101 named an extension not understood); ``deflate``,
    ``no_context_takeover`` and ``window_bits`` are what the 101 agreed. ``connection`` is the
    handshake's ``desiredConnectionType`` (None before it; see ``ConnectionType``). ``last`` is
    the latest message judged (None before any) and ``seen`` counts the messages judged, by
    ``Seen``; both are only for a debug log. Once a ``feed`` has found input, the Regular
    messages after it in the same ``data`` are skipped unread, unless ``judge_all`` (for a debug
    log that wants them all in ``seen``: it costs more).
    """

    def __init__(self, extensions: str | None = None, judge_all: bool = False) -> None:
        self.judge_all = judge_all
        self.parsing = True  # False once something did not parse: then everything counts
        self.deflate, self.no_context_takeover, self.window_bits = False, False, 15
        try:
            self.deflate, self.no_context_takeover, self.window_bits = \
                _parse_extensions(extensions)
        except _NotProtocol:
            self.parsing = False
        # (Inflating with the largest window reads any sender's stream, whatever window it
        # used; VS Code's server does the same.)
        self._inflater = zlib.decompressobj(wbits=-15) if self.deflate else None
        # frame layer
        self._frame_head = bytearray()  # a frame header split between chunks
        self._left = 0  # payload bytes of the current frame not yet seen
        self._mask = b""
        self._header_keys: dict[int, int] = {}  # phase: the mask over a header, as an int
        self._phase = 0  # payload bytes of the current frame seen, mod 4
        self._carries_data = False  # the current frame's payload is protocol stream
        self._final = False  # the current frame ends its message
        self._in_message = False  # a binary message has begun and not ended
        self._compressed = False  # that message is compressed
        self._pending_tail = False  # and its end has not yet been given to the inflater
        # stream layer
        self._head = bytearray()  # a message header split between frames or chunks
        self._skip = 0  # message data bytes still to come, not read
        self._peek = bytearray()  # the first bytes of a message's data, until judged
        self._need = 0  # bytes still to come into _peek
        self._kind = 0  # the type of the message being peeked at
        self._whole = False  # _peek will hold all of that message's data
        self._found = False  # the data being fed holds input
        # what was judged
        self.connection: int | None = None
        self._connection_name = "unknown"
        self.last: Seen | None = None
        self.seen: dict[Seen, int] = {}

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` (the next bytes from the browser) completed the first bytes of a
        Regular message judged input (see the module's docstring), or did not parse (then so
        does every later ``data``); False for keep-alives, acks, the handshake, control frames,
        the workbench's automatic calls and replies, and bytes that only begin a message or
        continue one already judged. Never raises."""
        if not self.parsing:
            return len(data) > 0
        try:
            self._found = False
            return self._frames(memoryview(data))
        except Exception:  # malformed, or a bug: the meter must never break the relay
            self.parsing = False
            self._inflater = None
            self._head.clear()
            self._frame_head.clear()
            self._peek.clear()
            return True

    # -- RFC 6455 frames -----------------------------------------------------------------------
    def _frames(self, data: memoryview) -> bool:
        found = False
        pos, end = 0, len(data)
        while pos < end:
            if self._left:
                take = min(self._left, end - pos)
                self._left -= take
                if self._carries_data:
                    piece = data[pos:pos + take]
                    if not self._compressed:
                        if take > _UNMASK_WHOLE:  # (only the headers in it are unmasked)
                            found |= self._stream(piece, self._mask, self._phase)
                        else:
                            found |= self._stream(_unmask(piece, self._mask, self._phase))
                    else:  # (a message's tail goes with its last bytes: one call, not two)
                        plain = _unmask(piece, self._mask, self._phase)
                        found |= self._inflate(plain, not self._left and self._final)
                    self._phase = (self._phase + take) & 3
                pos += take
                if not self._left:
                    found |= self._frame_end()
                continue
            # a frame header: its size is known from its second byte
            head = self._frame_head
            if head or end - pos < 2:
                need = 2 if len(head) < 2 else _header_size(head[1])
                take = min(need - len(head), end - pos)
                head += data[pos:pos + take]
                pos += take
                if len(head) < 2 or len(head) < _header_size(head[1]):
                    continue
                self._frame_start(head, 0)
                head.clear()
            else:
                size = _header_size(data[pos + 1])
                if end - pos < size:
                    head += data[pos:end]
                    pos = end
                    continue
                self._frame_start(data, pos)
                pos += size
            if not self._left:
                found |= self._frame_end()
        return found

    def _frame_start(self, buf: bytearray | memoryview, at: int) -> None:
        b0, b1 = buf[at], buf[at + 1]
        if not b1 & 0x80:
            raise _NotProtocol("unmasked client frame")
        length = b1 & 0x7F
        at += 2
        if length == 126:
            (length,) = _LEN16.unpack_from(buf, at)
            at += 2
        elif length == 127:
            (length,) = _LEN64.unpack_from(buf, at)
            at += 8
            if length >> 63:
                raise _NotProtocol("64-bit length with its top bit set")
        self._mask = bytes(buf[at:at + 4])
        self._header_keys.clear()
        self._left, self._phase = length, 0
        fin, rsv1, opcode = b0 & 0x80, b0 & 0x40, b0 & 0x0F
        if b0 & 0x30:
            raise _NotProtocol("RSV2/RSV3 set")
        if opcode >= 0x8:
            if opcode not in (_CLOSE, _PING, _PONG) or not fin or rsv1 or length > 125:
                raise _NotProtocol(f"control frame {b0:#04x} of {length} bytes")
            self._carries_data = False
            return
        if opcode == _CONT:
            # (RSV1 here is ignored, as VS Code's server does: compression is the message's.)
            if not self._in_message:
                raise _NotProtocol("continuation frame outside a message")
        elif opcode == _BINARY:
            if self._in_message:
                raise _NotProtocol("new message inside a fragmented one")
            if rsv1 and self._inflater is None:
                raise _NotProtocol("RSV1 without permessage-deflate")
            self._in_message, self._compressed = True, bool(rsv1)
            self._pending_tail = self._compressed
        elif opcode == _TEXT:
            raise _NotProtocol("text frame: not VS Code's client")
        else:
            raise _NotProtocol(f"reserved opcode {opcode:#x}")
        self._carries_data, self._final = True, bool(fin)

    def _frame_end(self) -> bool:
        """The current frame's payload is all seen: a message may have ended."""
        if not (self._carries_data and self._final):
            return False
        self._in_message = False
        if self._compressed and self._pending_tail:  # (its last frame was empty)
            return self._inflate(b"", True)
        return False

    def _inflate(self, compressed: bytes, last: bool) -> bool:
        """Inflate a compressed message's bytes (``last``: its end) in pieces of at most
        _INFLATE_PIECE, each parsed and dropped."""
        inflater = self._inflater
        assert inflater is not None
        found = False
        if last:
            compressed += _TAIL
        self._pending_tail = not last
        while compressed:
            plain = inflater.decompress(compressed, _INFLATE_PIECE)
            if plain:
                found |= self._stream(plain)
            compressed = inflater.unconsumed_tail
        # (A message may end with a BFINAL block: then the tail is not needed and no more of
        # the message may follow. The next message starts a new window.)
        extra = inflater.unused_data
        if extra and (extra != _TAIL or not last):
            raise _NotProtocol("data after the end of a deflate stream")
        if last and (inflater.eof or self.no_context_takeover):
            self._inflater = zlib.decompressobj(wbits=-15)
        return found

    # -- VS Code's protocol stream -------------------------------------------------------------
    def _stream(self, buf: bytes | memoryview, mask: bytes = b"", phase: int = 0) -> bool:
        """Parse message headers in ``buf``, peek at the first bytes of Regular and Control
        messages' data and skip the rest. ``mask``: ``buf`` is still masked (``buf[0]`` being
        the frame's payload byte ``phase``, mod 4)."""
        found = self._found
        pos, end = 0, len(buf)
        head = self._head
        skip, need = self._skip, self._need
        keys = self._header_keys
        while True:
            if need:
                take = min(need, end - pos)
                piece = _unmask(buf[pos:pos + take], mask, (phase + pos) & 3) if mask \
                    else bytes(buf[pos:pos + take])
                pos += take
                need -= take
                if not self._peek and not need:  # (all in this buffer: no need to keep it)
                    found |= self._judge(piece)
                    continue
                self._peek += piece
                if need:
                    break
                found |= self._judge(bytes(self._peek))
                self._peek.clear()
            if skip:
                if skip >= end - pos:
                    skip -= end - pos
                    break
                pos += skip
                skip = 0
            if head or end - pos < HEADER_LEN:
                take = min(HEADER_LEN - len(head), end - pos)
                head += _unmask(buf[pos:pos + take], mask, (phase + pos) & 3) if mask \
                    else buf[pos:pos + take]
                pos += take
                if len(head) < HEADER_LEN:
                    break
                kind, ident, _, size = HEADER.unpack(head)
                head.clear()
            elif mask:
                key = keys.get((phase + pos) & 3)
                if key is None:
                    key = keys[(phase + pos) & 3] = _header_key(mask, (phase + pos) & 3)
                kind, ident, _, size = HEADER.unpack(
                    (int.from_bytes(buf[pos:pos + HEADER_LEN], "little") ^ key)
                    .to_bytes(HEADER_LEN, "little"))
                pos += HEADER_LEN
            else:
                kind, ident, _, size = HEADER.unpack_from(buf, pos)
                pos += HEADER_LEN
            if kind == _REGULAR and found and not self.judge_all:
                skip = size  # (the data fed is input already)
            elif kind == _REGULAR and self._connection_name not in _JUDGED:
                # (a connection not understood: the message counts, unread)
                found |= self._note(Seen(self._connection_name, "unjudged", "", True))
                skip = size
            elif kind in (_REGULAR, _CONTROL):
                need = min(size, _REGULAR_PEEK if kind == _REGULAR else _CONTROL_PEEK)
                skip = size - need
                self._kind, self._whole = kind, not skip
                if not need:
                    found |= self._judge(b"")
            elif kind not in UPKEEP_TYPES or ident or size:
                raise _NotProtocol(f"message type {kind}, id {ident}, {size} bytes")
        self._skip, self._need, self._found = skip, need, found
        return found

    def _judge(self, data: bytes) -> bool:
        """Judge the message whose data begins with ``data``: whether it is input."""
        if self._kind == _CONTROL:
            name = self._handshake(data)  # (first: it may tell the connection)
            return self._note(Seen(self._connection_name, "control", name, False))
        try:
            if self.connection == ConnectionType.MANAGEMENT:
                kind, name, is_input = _judge_ipc(data)
            else:
                kind, name, is_input = _judge_rpc(data)
        except (ValueError, IndexError):
            kind, name, is_input = "unparsed", "", True
        return self._note(Seen(self._connection_name, kind, name, is_input))

    def _handshake(self, data: bytes) -> str:
        """Read a Control message (JSON, or its first _CONTROL_PEEK bytes): its type, keeping
        the connection's type when it is the ``connectionType`` one."""
        kind = desired = None
        if self._whole:
            try:
                message = json.loads(data)
            except (ValueError, RecursionError):
                message = None
            if isinstance(message, dict):
                kind, desired = message.get("type"), message.get("desiredConnectionType")
        elif data.startswith(b'{"type":"connectionType",'):  # (a long one: read as text)
            kind = "connectionType"
            match = _DESIRED.search(data)
            desired = int(match.group(1)) if match else None
        if kind == "connectionType" and type(desired) is int:
            self.connection = desired
            self._connection_name = _CONNECTIONS.get(desired, "other")
        return kind if kind in ("auth", "connectionType") else "other"

    def _note(self, seen: Seen) -> bool:
        """Keep ``seen`` for a debug log; whether it is input."""
        self.last = seen
        counts = self.seen
        if seen in counts:
            counts[seen] += 1
        elif len(counts) < _SEEN_KEYS:
            counts[seen] = 1
        else:
            seen = seen._replace(name="(more)")
            counts[seen] = counts.get(seen, 0) + 1
        return seen.input


def _header_size(b1: int) -> int:
    """A client frame header's size from its second byte (mask included, as it must be)."""
    length = b1 & 0x7F
    return 6 + (2 if length == 126 else 8 if length == 127 else 0)
