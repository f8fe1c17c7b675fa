"""The ``dao`` command: streams, components and the demo.

Streams: ls, info, rm, watch, record. Components: run, ctl, events, supervise, logs (from
:mod:`dao.runtime.cli`). The demo: an AO loop closed on the simulated bench.

Run ``dao --help`` for the subcommands, ``dao SUBCOMMAND --help`` for their options.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

__all__ = ["main"]


def _fmt_age(seconds: float) -> str:
    if seconds < 0 or seconds > 1e9:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds * 1e3:.1f} ms"


def _fmt_rate(hz: float | None) -> str:
    if hz is None:
        return "-"
    return f"{hz / 1e3:.2f} kHz" if hz >= 1e3 else f"{hz:.1f} Hz"


def _history_span(s) -> tuple[int, float]:
    """Frames in a stream's FIFO history and the time they span, in seconds."""
    meta = s.history_metadata()
    return len(meta), meta.duration_s


def _fmt_span(s) -> str:
    import dao

    try:
        n, span = _history_span(s)
    except dao.StreamError:  # a slot left under write by a writer that died mid-frame
        return "stuck"
    return f"{n} in {_fmt_age(span)}" if n > 1 else "-"


def _open(name: str):
    import dao

    return dao.shm(name)


def _owner(path: str) -> str:
    """OWNER column of ``dao ls``: the pids of live writers, ``dead owner pid N``, or ``-``."""
    from dao.streams.stream import stream_holders

    try:
        return stream_holders(path).describe()
    except (ValueError, OSError):
        return "-"


def _mirror_row(shown: str, s, now: float) -> tuple[str, ...] | None:
    """A row of the MIRROR table of ``dao ls`` for a stream kept by a remote mirror
    (:class:`dao.net.mirror.Mirror` writes these keywords about ten times a second), else
    None."""
    try:
        kw = s.keywords
        rx_ns = kw.get("mirror_rx_ns")
        if rx_ns is None:
            return None
        down_s = float(kw.get("mirror_down_s", 1.0))
        lost, src = kw.get("mirror_lost", 0), kw.get("src_cnt0", 0)
    except (ValueError, TypeError):
        return None
    silent = now - rx_ns / 1e9 if rx_ns else None
    if silent is None:
        link = "down (nothing received yet)"
    elif silent <= down_s + 0.3:  # the keywords are refreshed every 0.1 s
        link = "up"
    else:
        link = "down"
    newest = now - s.get_timestamp() if s.get_counter() else -1
    return (shown, link, "-" if silent is None else _fmt_age(silent), _fmt_age(newest),
            str(lost), str(src))


def _print_table(header: tuple[str, ...], table: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    for r in [header, *table]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def cmd_ls(args: argparse.Namespace) -> int:
    import dao
    from dao.streams.stream import dead_streams, shm_dir

    folder = os.path.abspath(args.dir or shm_dir())
    if args.dead:
        paths = [d.path for d in dead_streams(folder)]
    else:
        paths = dao.list_streams(folder)
    rows, before, streams = [], {}, {}
    for p in paths:
        try:
            s = dao.shm(p)
        except (dao.StreamError, OSError, ValueError) as e:
            rows.append((p, f"unreadable: {e}"))
            continue
        streams[p] = s
        before[p] = s.get_counter()
    t0 = time.monotonic()
    if streams and args.interval > 0:
        time.sleep(args.interval)
    dt = time.monotonic() - t0
    now = time.time()
    header = ("NAME", "SHAPE", "DTYPE", "DEPTH", "COUNTER", "AGE", "RATE", "SPAN", "OWNER")
    table, mirrors = [], []
    for p, s in streams.items():
        cnt = s.get_counter()
        rate = (cnt - before[p]) / dt if args.interval > 0 else None
        age = now - s.get_timestamp() if cnt else -1
        shown = s.name if os.path.dirname(p) == folder else p  # elsewhere: the full path
        table.append((shown, "x".join(map(str, s.shape)), str(s.dtype), str(s.depth), str(cnt),
                      _fmt_age(age), _fmt_rate(rate), _fmt_span(s), _owner(p)))
        row = _mirror_row(shown, s, now)
        if row is not None:
            mirrors.append(row)
        s.close()
    if not table and not rows:
        print(f"no streams of dead processes (in {folder} or known elsewhere)" if args.dead
              else f"no streams in {folder}")
    else:
        _print_table(header, table)
        if mirrors:  # freshness of the mirrors of other machines' streams
            print()
            _print_table(("MIRROR", "LINK", "SILENT", "NEWEST", "LOST", "SOURCE CNT0"), mirrors)
        for p, msg in rows:
            print(f"{p}: {msg}")
    if not args.dead:
        elsewhere = dead_streams(folder, outside=True)
        if elsewhere:
            print(f"{len(elsewhere)} stream(s) of dead processes outside {folder} (made "
                  "with another DAO_SHM_DIR, say): dao ls --dead lists them, dao rm --dead "
                  "removes them")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import dao

    s = _open(args.name)
    m = s.get_meta_data()
    print(f"path              {s.path}")
    print(f"shape             {s.shape}  dtype {s.dtype}  depth {s.depth}")
    for key, value in m.items():
        if key in ("shape", "dtype"):
            continue
        if key == "lastNbArray":
            used = np.flatnonzero(value)
            value = f"{len(used)} packet ids used" if len(used) else "unused"
        elif key == "atime_ns" and value:
            value = f"{value}  ({_fmt_age(time.time() - value * 1e-9)} ago)"
        print(f"{key:<18}{value}")
    print(f"{'newest slot':<18}{m['fifo_last_written']} of {s.depth}")
    try:
        n, span = _history_span(s)
        print(f"{'history':<18}{n} frames spanning {_fmt_age(span) if n > 1 else '-'}")
    except dao.StreamError as e:
        print(f"{'history':<18}unreadable: {e}")
    kws = dict(s.keywords)
    print(f"keywords          {len(kws)} of {s.keywords.capacity} records used")
    for k, v in kws.items():
        c = s.keywords.comment(k)
        print(f"  {k:<16}{v!r}" + (f"  / {c}" if c else ""))
    claims = s.semaphore_claims()
    print(f"{'semaphores':<18}" + (", ".join(f"{i}: pid {p}" for i, p in claims.items())
                              if claims else "none claimed"))
    print(f"{'owner':<18}{_owner(s.path)}")
    s.close()
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    import dao
    from dao.streams.stream import RECENT_WRITE_S, dead_streams, remove_dead

    if not args.names and not args.dead:
        raise ValueError("give the streams to remove, or --dead")
    if args.force and not args.dead:
        raise ValueError("--force goes with --dead (streams given by name are removed anyway)")
    status = 0
    for name in args.names:
        if args.dir and os.sep not in name:  # a bare name: in --dir
            name = os.path.join(args.dir, name if name.endswith(".im.shm") else name + ".im.shm")
        try:
            dao.remove(name)
            print(f"removed {dao.stream_path(name)}")
        except (dao.StreamError, ValueError) as e:
            msg = e.strerror if isinstance(e, OSError) and e.strerror else e
            print(f"dao rm: {msg}", file=sys.stderr)
            status = 1
    if args.dead:
        removed = remove_dead(args.dir, force=args.force)
        for what, pid in removed:
            if what.endswith(os.sep):
                why = f"an AOLoop's folder, emptied; dead owner pid {pid}"
            else:
                why = f"dead owner pid {pid}" if pid is not None else "left by a killed creation"
            print(f"removed {what} ({why})")
        kept = [] if args.force else [d for d in dead_streams(args.dir)
                                      if d.idle_s < RECENT_WRITE_S]
        for d in kept:
            print(f"kept {d.path}: its last dao writer (pid {d.owner}) is gone, but it was "
                  f"written {_fmt_age(d.idle_s)} ago (by a DAO C-library process?); "
                  "--force removes it anyway")
        if not removed and not kept:
            print("no dead streams")
    return status


def cmd_watch(args: argparse.Namespace) -> int:
    s = _open(args.name)
    last, t_last = s.get_counter(), time.monotonic()
    n = 0
    try:
        while args.count is None or n < args.count:
            time.sleep(args.interval)
            cnt, t = s.get_counter(), time.monotonic()
            rate = (cnt - last) / (t - t_last)
            age = time.time() - s.get_timestamp() if cnt else -1
            print(f"{s.name}  counter {cnt}  rate {_fmt_rate(rate)}  last frame "
                  f"{_fmt_age(age)} ago", flush=True)
            last, t_last = cnt, t
            n += 1
    except KeyboardInterrupt:
        pass
    finally:
        s.close()
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    from dao.streams.telemetry import record

    if args.frames is None and args.seconds is None:
        raise ValueError("give --frames N or --seconds S")
    res = record(args.names, args.out, frames=args.frames, seconds=args.seconds,
                 progress=not args.quiet)
    for name, n in res.frames.items():
        print(f"{name}: {n} frames, {res.lost[name]} lost")
    print(f"wrote {res.path} in {res.seconds:.2f} s")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.streams or args.rate is not None:
        return _demo_streams(args)
    import json

    from dao.loop import format_report, run_loop

    def say(msg: str) -> None:
        if not args.json:
            print(f"dao demo: {msg}", flush=True)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind: the loop's processes and streams are cleaned up

    signal.signal(signal.SIGTERM, on_term)
    try:
        report = run_loop(args.config, n_subap=args.size, gain=args.gain, frames=args.frames,
                          sensor=args.sensor, telemetry=args.telemetry, progress=say)
    except KeyboardInterrupt:
        print("dao demo: interrupted; the loop's processes are stopped and its streams removed",
              file=sys.stderr)
        return 130
    except (RuntimeError, TimeoutError) as e:
        print(f"dao demo: the loop failed: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0


def _demo_streams(args: argparse.Namespace) -> int:
    import numpy as np

    import dao
    from dao.testing import run_pair, temporary_stream_dir, unique_name

    size = args.size or 64
    frames = args.frames or 5000
    rate = args.rate or 2000.0
    shape = (size, size)
    with temporary_stream_dir():
        s = dao.shm(unique_name("demo"), np.zeros(shape, np.float32))
        print(f"dao demo: a writer and a reader process on {s.path} "
              f"({size}x{size} float32), {frames} frames at {rate:g} Hz")
        for mode, label in (("sem", "semaphore"), ("spin", "spin")):
            r = run_pair(s.path, frames, 1.0 / rate, mode)
            missed = frames - r.frames
            print(f"  {label:<9}  sent {frames} frames at {r.rate_hz:,.0f} Hz, "
                  f"read {r.frames} ({missed} coalesced, {r.torn} torn, {r.timeouts} timeouts); "
                  f"wake-up latency p50 {r.latency_us(50):.1f} us, p99 {r.latency_us(99):.1f} us")
        s.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dao`` command."""
    p = argparse.ArgumentParser(
        prog="dao",
        description="The dao command: streams (ls, info, rm, watch, record), components (run, "
        "ctl, events, supervise, logs), other machines' streams (server, remote) and the demo "
        "(an AO loop on the simulated bench).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    q = sub.add_parser("ls", help="list streams: shape, dtype, depth, counter, age, rate, owner",
                       description="List the streams of a folder. OWNER is the pid of each live "
                       "writer, or 'dead owner pid N' when the stream's last dao writer is gone "
                       "(remove those with dao rm --dead), or '-' (closed, or made by the DAO C "
                       "library). A last line counts the streams of dead processes outside the "
                       "folder (made with another DAO_SHM_DIR, say): dao ls --dead "
                       "lists them. Mirrors of other machines' streams (dao remote mirror) "
                       "get a second table: LINK up or down, SILENT (since the last message "
                       "from the source), NEWEST (age of the newest frame), LOST frames, and "
                       "the source's frame counter.")
    q.add_argument("--dir", help="folder to list (default $DAO_SHM_DIR or /tmp)")
    q.add_argument("--dead", action="store_true",
                   help="list only the streams whose last dao writer is gone and that no live "
                   "process holds: those of the folder and, with their full paths, those of "
                   "yours elsewhere known from dao's owner files (what dao rm --dead removes)")
    q.add_argument("--interval", type=float, default=0.2,
                   help="seconds over which rates are measured (0: no rate)")
    q.set_defaults(func=cmd_ls)

    q = sub.add_parser("info", help="all metadata and keywords of a stream")
    q.add_argument("name", help="stream name or path")
    q.set_defaults(func=cmd_info)

    q = sub.add_parser("rm", help="delete streams (file and semaphores); --dead: those of dead "
                       "processes",
                       description="Delete streams: each file (only *.im.shm files with a "
                       "stream header), its semaphores (/dev/shm/sem.<base>_semNN) and dao's "
                       "owner, claim and labels files. With --dead, delete what dead processes "
                       "left: the streams whose last dao writer is gone and that no live "
                       "process uses (those of the folder, and yours elsewhere known from "
                       "dao's owner files, such as those made with another DAO_SHM_DIR; an "
                       "older AOLoop's /tmp/daoloop* stream folder is removed too once "
                       "empty); and, anywhere, the semaphores and lock files "
                       "of streams whose file is gone and whose writer died. 'Dead' means the "
                       "last process that created or reused the stream through dao is gone, "
                       "however it ended: a crash, SIGKILL, or a normal exit. Processes of the "
                       "DAO C library and readers without a claimed semaphore are not seen, so "
                       "a dead-owned stream written in the last 10 s is kept unless --force.")
    q.add_argument("names", nargs="*", metavar="NAME")
    q.add_argument("--dead", action="store_true",
                   help="remove the streams whose last dao writer is gone (see above), with "
                   "their semaphores and lock files")
    q.add_argument("--force", action="store_true",
                   help="with --dead: also remove dead-owned streams written in the last 10 s")
    q.add_argument("--dir", help="folder of the streams named, and of --dead (default "
                   "$DAO_SHM_DIR or /tmp)")
    q.set_defaults(func=cmd_rm)

    q = sub.add_parser("watch", help="print a stream's counter and rate until Ctrl-C")
    q.add_argument("name")
    q.add_argument("--interval", type=float, default=1.0, help="seconds between lines")
    q.add_argument("--count", type=int, help="stop after this many lines")
    q.set_defaults(func=cmd_watch)

    q = sub.add_parser("record", help="record streams to NetCDF, Zarr or FITS, loss-free")
    q.add_argument("names", nargs="+", metavar="NAME")
    q.add_argument("--frames", type=int, help="frames of each stream to record")
    q.add_argument("--seconds", type=float, help="seconds to record")
    q.add_argument("--out", required=True, help="output file: .nc, .zarr or .fits")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_record)

    q = sub.add_parser("demo", help="close an AO loop on the simulated bench and report it",
                       description="Calibrate a simulated AO system (Shack-Hartmann or "
                       "pyramid), run it open then closed loop with its components in separate "
                       "processes, and print "
                       "open/closed-loop Strehl, residual, loop rate and latency per stage.")
    q.add_argument("--config", help="loop configuration (TOML) updating the embedded default")
    q.add_argument("--size", type=int, help="subapertures across the pupil (default 20; "
                   "with --streams: frame side in pixels, default 64)")
    q.add_argument("--sensor", choices=["shack-hartmann", "pyramid"],
                   help="wavefront sensor (default shack-hartmann)")
    q.add_argument("--gain", type=float, help="closed-loop integrator gain (default 0.5)")
    q.add_argument("--frames", type=int, help="closed-loop frames measured (default 1600; "
                   "with --streams: frames to send, default 5000)")
    q.add_argument("--telemetry", help="NetCDF file for the telemetry (default: "
                   "dao_loop_<date>-<time>.nc in the current folder; '' for none)")
    q.add_argument("--json", action="store_true", help="print the report as one JSON object")
    q.add_argument("--streams", action="store_true",
                   help="instead: the stream demo, a writer and a reader process")
    q.add_argument("--rate", type=float,
                   help="stream demo frame rate, Hz (default 2000; implies --streams)")
    q.set_defaults(func=cmd_demo)

    from dao.latency.cli import add_latency_parser
    from dao.net.cli import add_net_parsers
    from dao.runtime.cli import add_runtime_parsers

    add_runtime_parsers(sub)
    add_net_parsers(sub)
    add_latency_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dao`` command; returns the exit status."""
    import dao

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. dao ls | head: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (dao.DaoError, OSError, ValueError, TypeError) as e:
        msg = e.strerror if isinstance(e, OSError) and e.strerror else e
        print(f"dao {args.command}: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
