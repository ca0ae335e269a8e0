"""CPU cost of a request head that arrives one byte per read (one byte per TLS record), as a slow or
hostile client sends it. The framer searches only what is new, so the cost grows linearly with the
head; it used to re-copy and re-search the whole partial head per read (quadratic).

    python bench/slowhead.py            # 4, 16 and 64 KiB heads
"""

from __future__ import annotations

import time

from casarray.http.h1 import RequestReader


def head_of(size: int) -> bytes:
    start = b"POST /mapi/emsmdb/ HTTP/1.1\r\nHost: outlook.alwayshotcafe.com\r\n"
    pad = b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"v" * 800) for i in range(size // 813 + 1))
    return (start + pad)[: size - 24] + b"\r\nContent-Length: 0\r\n\r\n"


def one_byte_at_a_time(head: bytes) -> float:
    reader = RequestReader()
    start = time.process_time()
    for i in range(len(head)):
        reader.feed(head[i : i + 1])
    return time.process_time() - start


def main() -> None:
    print(f"{'head':>8}  {'CPU':>9}  {'per byte':>9}")
    for kib in (4, 16, 63):
        head = head_of(kib * 1024)
        seconds = min(one_byte_at_a_time(head) for _ in range(3))
        print(f"{kib:>5} KiB  {seconds * 1000:>7.1f} ms  {seconds / len(head) * 1e9:>6.0f} ns")


if __name__ == "__main__":
    main()
