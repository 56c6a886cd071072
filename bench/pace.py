#!/usr/bin/env python3
"""Send a file's lines over one TCP connection at a fixed rate, for a fixed time, cycling
through the file. Every 10 ms it sends the lines that are due by then, so the pace holds over
any interval longer than that; when the receiver pushes back (TCP blocked) the sender falls
behind, and that is reported rather than hidden.

    pace.py HOST:PORT FILE RATE SECONDS   ->  prints "sent N lines in S s (R lines/s), max behind B lines"
"""
import socket
import sys
import time


def main():
    addr, path, rate, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    host, port = addr.rsplit(":", 1)
    data = open(path, "rb").read()
    ends = []  # end of each line, past its newline
    i = data.find(b"\n")
    while i >= 0:
        ends.append(i + 1)
        i = data.find(b"\n", i + 1)
    if not ends:
        sys.exit("no lines in " + path)
    total = int(rate * secs)
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    start = time.monotonic()
    sent, pos, behind = 0, 0, 0  # lines sent, index of the next line in the file
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        behind = max(behind, due - sent)
        while sent < due:
            n = min(due - sent, len(ends) - pos)
            begin = ends[pos - 1] if pos else 0
            sock.sendall(data[begin:ends[pos + n - 1]])
            sent += n
            pos = (pos + n) % len(ends)
        next_tick = start + (sent / rate)
        pause = next_tick - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, 0.01))
    sock.close()
    took = time.monotonic() - start
    print(f"sent {sent} lines in {took:.1f} s ({sent / took:.0f} lines/s), max behind {behind} lines")


if __name__ == "__main__":
    main()
