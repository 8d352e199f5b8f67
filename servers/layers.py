"""The layered storage stack's roles: page cache, file system, zlib, AEAD, driver.

Every layer has one interface, ``handle(request) -> reply`` (bytes in, bytes
out), and reaches the layer below through one function, ``down(request)``.
In process ``down`` is the next layer's ``handle``; as servers it is a
framed pipe to the next server. A request's first byte says what it is:

  page cache   w write file, s sync, d drop, r read file  (from the client)
  file system  b write block, c commit file, i size, g get block
  transforms   W write record -> address, R read address -> record
  every layer  t stats (own record, then the lower layers'), z reset stats

The transforms (zlib, AEAD) change a record on its way down (``forward``)
and back on its way up (``inverse``); they pass other requests through. The
driver appends records to a real file (a log: the file system keeps each
block's address) and reads them back with ``pread``. Each layer counts the
time spent in it, less the time spent waiting on the layers below, and the
bytes it processes: what enters it on a write, what leaves it on a read.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from itertools import pairwise
from time import perf_counter_ns

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from servers.transports.base import (
    Buffer,
    Channel,
    Link,
    Names,
    PeerGone,
    Transport,
    close_fds,
)
from servers.transports.pipe import DEFAULT_PIPE_SIZE, PipeLink

Down = Callable[[bytes], bytes]

WRITE_FILE, SYNC, DROP, READ_FILE = b"w"[0], b"s"[0], b"d"[0], b"r"[0]
PUT_BLOCK, COMMIT, SIZE, GET_BLOCK = b"b"[0], b"c"[0], b"i"[0], b"g"[0]
WRITE, READ = b"W"[0], b"R"[0]
STATS, RESET = b"t"[0], b"z"[0]
READ_OPS = frozenset((DROP, READ_FILE, SIZE, GET_BLOCK, READ))

ZLIB_LEVEL = 6  # zlib's default: what a compressing file system would use
NONCE_BYTES = 12  # AES-GCM's standard nonce; the tag adds 16 bytes per record
KEY_BITS = 256
RAW, DEFLATED = b"\0", b"\1"  # a compressed record's flag byte
HEADER_MAGIC = b"IPCBFILE"

ADDRESS = struct.Struct("<QI")  # offset, length of a record on the device
STAT = struct.Struct("<8sQQQQQ")  # layer, ns write, ns read, bytes write, bytes read, requests

# The layers of each ordering between the file system and the driver.
ORDERS: dict[str, tuple[str, ...]] = {
    "c-then-e": ("zlib", "aead"),
    "e-then-c": ("aead", "zlib"),
    "plain": (),
}
LAYERS = ("cache", "fs", "zlib", "aead", "driver")


class LayerError(RuntimeError):
    """A layer below a server failed; the message names the layer and the exception."""


def name_id(name: str) -> bytes:
    raw = name.encode()
    return struct.pack("<H", len(raw)) + raw


def split_name(msg: bytes, at: int) -> tuple[str, int]:
    """The name that starts at ``at``, and where what follows it starts."""
    (length,) = struct.unpack_from("<H", msg, at)
    return msg[at + 2:at + 2 + length].decode(), at + 2 + length


class Layer:
    """Accounting and stats shared by every layer; ``serve`` is the layer's own work."""

    name = "layer"

    def __init__(self) -> None:
        self.down: Down | None = None
        self.ns = [0, 0]  # write path, read path
        self.bytes = [0, 0]
        self.requests = 0
        self._waited = 0

    def bind(self, down: Down) -> Layer:
        self.down = down
        return self

    def call(self, request: bytes) -> bytes:
        """Ask the layer below; the time this takes is not this layer's."""
        assert self.down is not None, f"{self.name} has no layer below"
        start = perf_counter_ns()
        reply = self.down(request)
        self._waited += perf_counter_ns() - start
        return reply

    def handle(self, request: bytes) -> bytes:
        op = request[0]
        if op == STATS:
            mine = STAT.pack(self.name.encode(), *self.ns, *self.bytes, self.requests)
            return mine + (self.call(request) if self.down else b"")
        if op == RESET:
            self.ns, self.bytes, self.requests = [0, 0], [0, 0], 0
            return self.call(request) if self.down else b""
        start, self._waited = perf_counter_ns(), 0
        reply = self.serve(op, request)
        self.ns[op in READ_OPS] += perf_counter_ns() - start - self._waited
        self.requests += 1
        return reply

    def serve(self, op: int, request: bytes) -> bytes:
        raise ValueError(f"{self.name}: unknown request {bytes([op])!r}")

    def close(self) -> None:
        """Release what the layer holds (the driver's file)."""


class PageCache(Layer):
    """Write-back cache of fixed-size pages keyed by (file, index); sizes cached too."""

    name = "cache"

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block
        self.pages: dict[tuple[str, int], bytes] = {}
        self.sizes: dict[str, int] = {}
        self.dirty: dict[str, None] = {}  # files with unwritten pages, in write order

    def serve(self, op: int, request: bytes) -> bytes:
        if op == WRITE_FILE:
            name, at = split_name(request, 1)
            body = memoryview(request)[at:]
            old = self.sizes.get(name, 0)
            for index in range(-(-old // self.block)):
                self.pages.pop((name, index), None)
            for index, start in enumerate(range(0, len(body), self.block)):
                self.pages[name, index] = bytes(body[start:start + self.block])
            self.sizes[name] = len(body)
            self.dirty[name] = None
            self.bytes[0] += len(body)
            return b""
        if op == SYNC:
            for name in self.dirty:
                ident = name_id(name)
                for index in range(-(-self.sizes[name] // self.block)):
                    self.call(b"b" + struct.pack("<I", index) + ident
                              + self.pages[name, index])
                self.call(b"c" + struct.pack("<Q", self.sizes[name]) + ident)
            self.dirty.clear()
            return b""
        if op == DROP:  # like drop_caches: clean pages and cached sizes go
            if self.dirty:
                raise RuntimeError("cache: drop with dirty pages (sync first)")
            self.pages.clear()
            self.sizes.clear()
            return b""
        if op == READ_FILE:
            name, _ = split_name(request, 1)
            ident = name_id(name)
            size = self.sizes.get(name)
            if size is None:
                (size,) = struct.unpack("<Q", self.call(b"i" + ident))
                self.sizes[name] = size
            parts = []
            for index in range(-(-size // self.block)):
                page = self.pages.get((name, index))
                if page is None:
                    page = self.pages[name, index] = self.call(
                        b"g" + struct.pack("<I", index) + ident)
                parts.append(page)
            data = b"".join(parts)
            if len(data) != size:
                raise RuntimeError(f"cache: {name} read {len(data)} bytes of {size}")
            self.bytes[1] += size
            return data
        return super().serve(op, request)


class FileSystem(Layer):
    """Log-structured: every block and every file's header is a record appended below;
    the file system keeps the address of each (in memory: it never remounts)."""

    name = "fs"

    def __init__(self) -> None:
        super().__init__()
        self.extents: dict[str, dict[int, bytes]] = {}  # name -> index -> packed address
        self.inodes: dict[str, tuple[int, bytes]] = {}  # name -> size, header's address

    def serve(self, op: int, request: bytes) -> bytes:
        if op == PUT_BLOCK:
            (index,) = struct.unpack_from("<I", request, 1)
            name, at = split_name(request, 5)
            data = request[at:]
            self.extents.setdefault(name, {})[index] = self.call(b"W" + data)
            self.bytes[0] += len(data)
            return b""
        if op == COMMIT:
            (size,) = struct.unpack_from("<Q", request, 1)
            name, _ = split_name(request, 9)
            blocks = self.extents.get(name, {})
            # The header per file: name, size and the address of every block, in order.
            header = (HEADER_MAGIC + struct.pack("<QI", size, len(blocks)) + name_id(name)
                      + b"".join(blocks[i] for i in range(len(blocks))))
            self.inodes[name] = (size, self.call(b"W" + header))
            return b""
        if op == SIZE:
            name, _ = split_name(request, 1)
            if name not in self.inodes:
                raise FileNotFoundError(name)
            return struct.pack("<Q", self.inodes[name][0])
        if op == GET_BLOCK:
            (index,) = struct.unpack_from("<I", request, 1)
            name, _ = split_name(request, 5)
            data = self.call(b"R" + self.extents[name][index])
            self.bytes[1] += len(data)
            return data
        return super().serve(op, request)


class Transform(Layer):
    """A layer that rewrites records on the way down and restores them on the way up."""

    def forward(self, data: Buffer) -> bytes:
        raise NotImplementedError

    def inverse(self, record: Buffer) -> bytes:
        raise NotImplementedError

    def serve(self, op: int, request: bytes) -> bytes:
        if op == WRITE:
            body = memoryview(request)[1:]
            self.bytes[0] += len(body)
            return self.call(b"W" + self.forward(body))
        if op == READ:
            data = self.inverse(self.call(request))
            self.bytes[1] += len(data)
            return data
        return self.call(request)  # not ours: pass it on


class Compress(Transform):
    """zlib at a fixed level; a record that does not shrink is stored raw (as btrfs does),
    so incompressible input costs the attempt and one flag byte."""

    name = "zlib"

    def __init__(self, level: int = ZLIB_LEVEL) -> None:
        super().__init__()
        self.level = level

    def forward(self, data: Buffer) -> bytes:
        packed = zlib.compress(data, self.level)
        return DEFLATED + packed if len(packed) < len(data) else RAW + bytes(data)

    def inverse(self, record: Buffer) -> bytes:
        view = memoryview(record)
        return zlib.decompress(view[1:]) if view[:1] == DEFLATED else bytes(view[1:])


class Encrypt(Transform):
    """AES-GCM, a fresh random nonce per record (stored in front of it); the key is made
    where the layer is made, so as a server it never leaves that process."""

    name = "aead"

    def __init__(self, key: bytes | None = None) -> None:
        super().__init__()
        self.aead = AESGCM(key or AESGCM.generate_key(bit_length=KEY_BITS))

    def forward(self, data: Buffer) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.aead.encrypt(nonce, data, None)

    def inverse(self, record: Buffer) -> bytes:
        view = memoryview(record)
        return self.aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], None)  # InvalidTag


class Driver(Layer):
    """Appends records to a real file with pwrite and reads them back with pread."""

    name = "driver"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        self.end = 0

    def serve(self, op: int, request: bytes) -> bytes:
        if op == WRITE:
            body = memoryview(request)[1:]
            done = 0
            while done < len(body):
                done += os.pwrite(self.fd, body[done:], self.end + done)
            address = ADDRESS.pack(self.end, len(body))
            self.end += len(body)
            self.bytes[0] += len(body)
            return address
        if op == READ:
            offset, length = ADDRESS.unpack_from(request, 1)
            data = os.pread(self.fd, length, offset)
            if len(data) != length:
                raise OSError(f"driver: short read, {len(data)} of {length} bytes at {offset}")
            self.bytes[1] += length
            return data
        return super().serve(op, request)

    def close(self) -> None:
        close_fds(self.fd)
        self.fd = -1


def make_layer(name: str, block: int, path: str, level: int = ZLIB_LEVEL) -> Layer:
    if name == "cache":
        return PageCache(block)
    if name == "fs":
        return FileSystem()
    if name == "zlib":
        return Compress(level)
    if name == "aead":
        return Encrypt()
    if name == "driver":
        return Driver(path)
    raise ValueError(f"unknown layer {name!r} (known: {', '.join(LAYERS)})")


def stack_layers(order: str) -> tuple[str, ...]:
    """The layers top to bottom for an ordering."""
    if order not in ORDERS:
        raise ValueError(f"unknown ordering {order!r} (known: {', '.join(ORDERS)})")
    return ("cache", "fs", *ORDERS[order], "driver")


def in_process(order: str, block: int, path: str) -> tuple[Down, list[Layer]]:
    """The monolithic stack: each layer calls the next; returns the top and all layers."""
    layers = [make_layer(name, block, path) for name in stack_layers(order)]
    for upper, lower in pairwise(layers):
        upper.bind(lower.handle)
    return layers[0].handle, layers


class StackClient:
    """What a program asks of the stack's top (the page cache), in process or not."""

    def __init__(self, top: Down) -> None:
        self.top = top

    def write(self, name: str, data: bytes) -> None:
        self.top(b"w" + name_id(name) + data)

    def sync(self) -> None:
        self.top(b"s")

    def drop(self) -> None:
        self.top(b"d")

    def read(self, name: str) -> bytes:
        return self.top(b"r" + name_id(name))

    def reset(self) -> None:
        self.top(b"z")

    def stats(self) -> dict[str, tuple[int, int, int, int, int]]:
        """layer -> (ns write, ns read, bytes write, bytes read, requests)."""
        raw = self.top(b"t")
        out = {}
        for at in range(0, len(raw), STAT.size):
            name, *numbers = STAT.unpack_from(raw, at)
            out[name.rstrip(b"\0").decode()] = tuple(numbers)
        return out


# -- the server form: variable-size frames over a pair of pipes ---------------------------

FRAME = struct.Struct("<IB")  # body length, status (0 ok, 1 the body is an error message)


class FramedChannel(Channel):
    """One request or reply per frame, of any size: a stack's records vary in size."""

    payload = 0

    def __init__(self, rfd: int, wfd: int, frame_bytes: int = DEFAULT_PIPE_SIZE) -> None:
        self._rfd, self._wfd = rfd, wfd
        self._view = memoryview(bytearray(FRAME.size + max(frame_bytes, DEFAULT_PIPE_SIZE)))

    def send(self, data: Buffer, status: int = 0) -> None:
        head = FRAME.pack(len(data), status)
        try:
            sent = os.writev(self._wfd, [head, data])
            if sent < len(head) + len(data):  # more than the pipe holds: the rest as it drains
                rest = memoryview(head + bytes(data))[sent:]
                while rest:
                    rest = rest[os.write(self._wfd, rest):]
        except (BrokenPipeError, ConnectionResetError):
            raise PeerGone("peer closed its end") from None

    def recv(self) -> bytes:
        status, body = self._recv()
        if status:
            raise LayerError(body.decode(errors="replace"))
        return body

    def _recv(self) -> tuple[int, bytes]:
        # Into a buffer kept from frame to frame: a fresh large bytes per read would be
        # an mmap and a munmap each time. One frame is in flight per direction, so a
        # read that fills what it can never takes part of the next one.
        view, rfd = self._view, self._rfd
        got = os.readv(rfd, [view])
        while got < FRAME.size:
            more = os.readv(rfd, [view[got:]]) if got else 0
            if not more:
                raise PeerGone("peer closed its end (EOF)")
            got += more
        length, status = FRAME.unpack_from(view)
        total = FRAME.size + length
        if total > len(view):  # a frame larger than any before: grow, keep what came
            grown = bytearray(total)
            grown[:got] = view[:got]
            view = self._view = memoryview(grown)
        while got < total:
            more = os.readv(rfd, [view[got:total]])
            if not more:
                raise PeerGone("peer closed its end (EOF)")
            got += more
        return status, bytes(view[FRAME.size:total])

    def request(self, message: bytes) -> bytes:
        """Send a request, return the reply's body; a failure below raises LayerError."""
        self.send(message)
        return self.recv()

    def serve(self, handler: Callable[[Buffer], Buffer]) -> None:
        """Answer every request; a failing request answers with its error, the server stays."""
        who = getattr(getattr(handler, "__self__", None), "name", "server")
        while True:
            _, request = self._recv()
            try:
                reply, status = handler(request), 0
            except LayerError as exc:  # from below: pass the first failure's words up as-is
                reply, status = str(exc).encode(), 1
            except Exception as exc:
                reply, status = f"{who}: {type(exc).__name__}: {exc}".encode(), 1
            self.send(reply, status)

    def close(self) -> None:
        fds, self._rfd, self._wfd = (self._rfd, self._wfd), -1, -1
        close_fds(*(fd for fd in fds if fd >= 0))


class FramedPipe(Transport):
    """The registry's pipes (``PipeLink``), carrying frames of any size: what one layer
    server speaks to the next. ``payload`` sizes the pipes for the largest record."""

    name = "pipe"

    def open(self, names: Names, payload: int, timeout: float) -> Link:
        # frames of any size still cross whole when a bigger pipe is refused
        return PipeLink(payload, FramedChannel, resize_required=False)
