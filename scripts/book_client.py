#!/usr/bin/env python3
"""The book's JSON RPC client, in Python 3, to show echolab's JSON mode speaks its wire format.

The book's client frames each request as struct.pack("I", len(body)) + body, where "I" has no
byte-order prefix and so means *native* order: little-endian on x86 and ARM. It sends
{"in": "ping", "params": "ireader N"} and prints the reply's "out" and "result". This version
keeps that exact framing; unlike the book's, it loops on recv() until a whole reply has
arrived (a single recv may return part of one), and it also calls the book's "pi" method.

    python3 scripts/book_client.py --port 7000 --count 3
    server-thread --protocol json --addr 127.0.0.1:7000   # in another terminal
"""
import argparse
import json
import socket
import struct


def recv_exactly(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection mid-reply")
        data += chunk
    return data


def rpc(sock, method, params):
    body = json.dumps({"in": method, "params": params}).encode()
    sock.sendall(struct.pack("I", len(body)))  # native order, as the book does
    sock.sendall(body)
    (length,) = struct.unpack("I", recv_exactly(sock, 4))
    reply = json.loads(recv_exactly(sock, length))
    return reply["out"], reply["result"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7000)
    ap.add_argument("--count", type=int, default=10, help="ping requests to send")
    ap.add_argument("--pi", type=int, default=1000, help="n for the final pi request")
    args = ap.parse_args()
    with socket.create_connection((args.host, args.port), timeout=10) as sock:
        for i in range(args.count):
            out, result = rpc(sock, "ping", "ireader %d" % i)
            print(out, result)
        out, result = rpc(sock, "pi", args.pi)
        print(out, "%.6f" % result)


if __name__ == "__main__":
    main()
