"""Stands in for `cloudflared access tcp`, which needs Cloudflare's edge: accepts the same
arguments (`access tcp --hostname H --url 127.0.0.1:PORT`), listens on that loopback port and
forwards every connection, byte for byte, to HOMELAB_TEST_FORWARD_TO (host:port) - what the
tunnel does between the laptop and the Kopia server's tcp route.
"""

import os
import socket
import sys
import threading


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main():
    args = sys.argv[1:]
    if args[:2] != ["access", "tcp"] or "--url" not in args or "--hostname" not in args:
        sys.exit("usage: access tcp --hostname HOST --url 127.0.0.1:PORT")
    host, port = args[args.index("--url") + 1].rsplit(":", 1)
    to_host, to_port = os.environ["HOMELAB_TEST_FORWARD_TO"].rsplit(":", 1)
    listener = socket.create_server((host, int(port)))
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection((to_host, int(to_port)))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


main()
