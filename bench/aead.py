"""Streaming AEAD throughput against raw AES-256-GCM + SHA-256 over the same 1 MiB chunks, in one process.

The baseline is the least any chunked design must do (hash and encrypt each chunk once); the ratio says what
the stream format, its bookkeeping and its I/O loop cost on top. Peak RSS and the tracemalloc peak show memory
stays flat whatever the size.

    .venv/bin/python bench/aead.py [--size-mib 1024] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import resource
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloister.crypto.stream import CHUNK_SIZE, TAG_SIZE, generate_key, open_stream, seal_stream

MIB = 1 << 20


class Repeating(io.RawIOBase):
    """``size`` bytes made of one random 1 MiB block repeated, generated as it is read."""

    def __init__(self, size: int, block: bytes) -> None:
        self._left, self._block = size, memoryview(block)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._left, len(self._block))
        buffer[:n] = self._block[:n]
        self._left -= n
        return n


class Discard(io.RawIOBase):
    """A sink that keeps nothing."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def _as_binary(stream: io.RawIOBase) -> BinaryIO:
    return cast(BinaryIO, stream)


def baseline_seal(key: bytes, source: Repeating, sink: BinaryIO) -> None:
    """Raw AESGCM.encrypt + sha256 per chunk, no format: a fixed nonce is fine for a cost measurement."""
    aead, hasher, nonce = AESGCM(key), hashlib.sha256(), bytes(12)
    view = memoryview(bytearray(CHUNK_SIZE))
    while n := source.readinto(view):
        chunk = view[:n]
        hasher.update(chunk)
        sink.write(aead.encrypt(nonce, chunk, None))


def baseline_open(key: bytes, source: io.BufferedReader, sink: BinaryIO) -> None:
    """Raw AESGCM.decrypt + sha256 over the chunks :func:`baseline_seal` wrote."""
    aead, hasher, nonce = AESGCM(key), hashlib.sha256(), bytes(12)
    view = memoryview(bytearray(CHUNK_SIZE + TAG_SIZE))
    while n := source.readinto(view):
        plain = aead.decrypt(nonce, view[:n], None)
        hasher.update(plain)
        sink.write(plain)


def best_seconds(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def traced_peak_mib(run: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="stream size in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per case; the best is kept")
    args = parser.parse_args()
    size = args.size_mib * MIB
    key, block = generate_key(), os.urandom(CHUNK_SIZE)
    print(f"stream {args.size_mib} MiB in {CHUNK_SIZE // MIB} MiB chunks, best of {args.repeat}")
    rss_start = max_rss_mib()

    with tempfile.TemporaryDirectory(prefix="cloister-bench-") as folder:
        ours_path, base_path = Path(folder) / "ours.clsa", Path(folder) / "baseline.bin"
        with ours_path.open("wb") as sink:
            seal_stream(key, _as_binary(Repeating(size, block)), sink)
        with base_path.open("wb") as raw_sink:
            baseline_seal(key, Repeating(size, block), raw_sink)

        def ours_seal() -> None:
            seal_stream(key, _as_binary(Repeating(size, block)), _as_binary(Discard()))

        def base_seal() -> None:
            baseline_seal(key, Repeating(size, block), _as_binary(Discard()))

        def ours_open() -> None:
            with ours_path.open("rb") as source:
                open_stream(key, source, _as_binary(Discard()))

        def base_open() -> None:
            with base_path.open("rb") as source:
                baseline_open(key, source, _as_binary(Discard()))

        timings = {
            "seal": (best_seconds(ours_seal, args.repeat), best_seconds(base_seal, args.repeat)),
            "open": (best_seconds(ours_open, args.repeat), best_seconds(base_open, args.repeat)),
        }
        rss_end = max_rss_mib()
        peaks = {"seal": traced_peak_mib(ours_seal), "open": traced_peak_mib(ours_open)}

    print(f"{'':6}{'cloister MiB/s':>16}{'baseline MiB/s':>16}{'ratio':>8}{'tracemalloc peak':>18}")
    for name, (ours, base) in timings.items():
        ours_rate, base_rate = args.size_mib / ours, args.size_mib / base
        print(f"{name:6}{ours_rate:16.0f}{base_rate:16.0f}{ours_rate / base_rate:8.2f}{peaks[name]:15.2f} MiB")
    print(f"peak RSS: {rss_start:.0f} MiB before, {rss_end:.0f} MiB after all runs")


if __name__ == "__main__":
    main()
