"""``dao server`` and ``dao remote``: serve this machine's streams, list and mirror those of
others (issue 13).

Wired into ``dao`` by :func:`add_net_parsers`; also runnable alone as
``python -m dao.net.cli {server,remote} ...``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from typing import Any

__all__ = ["add_server_parser", "add_remote_parser", "add_net_parsers", "main"]

_REDIS_HELP = "the registry, redis://[:PASSWORD@]HOST:PORT/DB (default $DAO_REDIS or " \
              "redis://127.0.0.1:6379/0)"


def _url(args: argparse.Namespace) -> str:
    from dao.net.remote import default_url

    return args.redis or default_url()


# -- dao server ---------------------------------------------------------------------------------
def add_server_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``server``: publish this machine's streams and serve remote mirrors."""
    p = subparsers.add_parser(
        "server",
        help="publish this machine's streams in Redis and serve them to remote mirrors",
        description="Register this machine and its streams in the Redis registry (kept true "
        "within a scan interval), and publish a stream over ZeroMQ while a remote client "
        "mirrors it. Runs until SIGTERM or Ctrl-C; exit status 2 if it cannot start.",
    )
    p.add_argument("--redis", help=_REDIS_HELP)
    p.add_argument("--host", help="this machine's name in the registry (default: hostname)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="IPv4 address to publish on, and the machine's ip (default 127.0.0.1)")
    p.add_argument("--ports", help="port range for publishers, A-B (default: any free port)")
    p.add_argument("--allow", nargs="+", metavar="GLOB",
                   help="publish only the streams whose names match one of these globs")
    p.add_argument("--read-only", action="store_true",
                   help="never let clients write to the streams")
    p.add_argument("--dir", help="stream folder (default $DAO_SHM_DIR or /tmp)")
    p.add_argument("--ttl", type=float, default=10.0, help="registry TTL, s (default 10)")
    p.add_argument("--scan", type=float, default=1.0,
                   help="seconds between scans of the stream folder (default 1)")
    p.set_defaults(func=cmd_server)
    return p


def cmd_server(args: argparse.Namespace) -> int:
    """Handler of ``dao server``."""
    from dao.errors import DaoError
    from dao.net.server import StreamServer

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        server = StreamServer(
            _url(args), host=args.host, bind=args.bind, ports=args.ports, allow=args.allow,
            read_only=args.read_only, ttl=args.ttl, scan_interval=args.scan,
            stream_dir=args.dir,
        )
    except (DaoError, OSError, ValueError) as exc:
        print(f"dao server: {exc}", file=sys.stderr, flush=True)
        return 2
    old = signal.signal(signal.SIGTERM, lambda *_: server.request_stop())
    try:
        server.run()
    except KeyboardInterrupt:
        server.request_stop()
    except (DaoError, OSError, ValueError) as exc:
        print(f"dao server: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


# -- dao remote ---------------------------------------------------------------------------------
def add_remote_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``remote``: list the machines and streams of the registry, mirror one."""
    p = subparsers.add_parser(
        "remote", help="list the streams of other machines, mirror one locally",
        description="Streams of other machines, through the Redis registry their "
        "'dao server' keeps. Exit status 2 on an error (said on stderr).",
    )
    sub = p.add_subparsers(dest="remote_command", required=True, metavar="COMMAND")
    q = sub.add_parser("ls", help="machines and their streams")
    q.add_argument("--redis", help=_REDIS_HELP)
    q.set_defaults(func=cmd_remote_ls)
    q = sub.add_parser("mirror", help="mirror a remote stream locally until Ctrl-C")
    q.add_argument("remote_host", metavar="HOST", help="the machine, as registered")
    q.add_argument("remote_name", metavar="NAME", help="its stream")
    q.add_argument("--local", help="local stream name (default NAME@HOST)")
    q.add_argument("--mode", choices=("latest", "every"), default="latest",
                   help="latest: newest frame only; every: every frame (default latest)")
    q.add_argument("--depth", type=int, default=1, help="FIFO depth of the local stream")
    q.add_argument("--timeout", type=float, default=5.0,
                   help="seconds to wait for the server to publish, and for the write lease "
                   "with --write (default 5)")
    q.add_argument("--write", action="store_true",
                   help="bidirectional: take the stream's write lease and send what local "
                   "writers put into the mirror back to the source, until Ctrl-C")
    q.add_argument("--redis", help=_REDIS_HELP)
    q.set_defaults(func=cmd_remote_mirror)
    return p


def cmd_remote_ls(args: argparse.Namespace) -> int:
    """Handler of ``dao remote ls``."""
    from dao.errors import DaoError
    from dao.net.remote import machines, streams

    try:
        url = _url(args)
        ms = machines(url)
        ss = streams(url)
    except (DaoError, OSError, ValueError) as exc:
        print(f"dao remote ls: {exc}", file=sys.stderr)
        return 2
    if not ms:
        print("no machine registered", file=sys.stderr)
        return 0
    for m in ms:
        print(f"{m['host']}  {m['ip']}  {m['role']}  last heartbeat {m['last_connect']}")
        for name, info in sorted(ss.get(m["host"], {}).items()):
            shape = "x".join(str(n) for n in info["shape"])
            clients = sum(len(c.get("clients", ())) for c in info["connections"]
                          if isinstance(c, dict))
            served = f"  served to {clients} client(s)" if clients else ""
            rate = info.get("rate")
            rate = "-" if rate is None else f"{rate:.1f} Hz"
            print(f"  {name:24s} {shape:>12s} {info['dtype']:8s} depth {info['depth']:<5} "
                  f"{rate:>10s}{served}")
    return 0


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def cmd_remote_mirror(args: argparse.Namespace) -> int:
    """Handler of ``dao remote mirror``."""
    from dao.errors import DaoError
    from dao.net.remote import mirror

    try:
        m = mirror(_url(args), args.remote_host, args.remote_name, local_name=args.local,
                   mode=args.mode, depth=args.depth, bidirectional=args.write,
                   timeout=args.timeout)
    except (DaoError, OSError, ValueError) as exc:  # TimeoutError is an OSError
        print(f"dao remote mirror: {exc}", file=sys.stderr)
        return 2
    if args.write:
        try:
            m.acquire(timeout=args.timeout)
        except DaoError as exc:
            m.close()
            print(f"dao remote mirror: {exc}", file=sys.stderr)
            return 2
    print(f"mirroring {m.host}:{m.name} from {m.address} into {m.local_name}"
          f"{', writes sent back (lease held)' if args.write else ''} (Ctrl-C to stop)",
          flush=True)
    old = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(1.0)
            st = m.status()
            age = "-" if st["age_s"] is None else f"{st['age_s'] * 1e3:.1f} ms"
            sent = f"  sent back {st['uplinked']}" if args.write else ""
            print(f"link {st['link']}  written {st['written']}  lost {st['lost']}  "
                  f"age {age}{sent}", flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, old)
        m.close()


def add_net_parsers(subparsers: Any) -> None:
    """Add ``server`` and ``remote``."""
    add_server_parser(subparsers)
    add_remote_parser(subparsers)


def main(argv: list[str] | None = None) -> int:
    """``python -m dao.net.cli {server,remote} ...``."""
    parser = argparse.ArgumentParser(prog="dao", description="dao network commands")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_net_parsers(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
