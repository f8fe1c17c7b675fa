"""The latency model of a loop configuration: the same system the loop runs (issue 14).

:func:`loop_pipeline` turns a loop configuration (the one ``dao demo`` and
:class:`dao.loop.AOLoop` take, :func:`dao.loop.config.load_loop_config`) and a
:class:`~dao.latency.profile.HardwareProfile` into a :class:`~dao.latency.model.Pipeline`
whose stages are the loop's, costed by the profile at the loop's sizes:

====================  ========================================================================
stage                 cost (seconds, distributions from the profile)
====================  ========================================================================
``camera``            the camera's frame written: time 0 of the frame (the loop's latency is
                      counted from the camera frame's write time)
``wfs_hop``           the Slopes process wakes on the camera stream's semaphore and reads
                      the image: ``hop.loop.<sensor>.wfs_to_slopes`` at the image's bytes if the
                      profile measured hops in running loops (:func:`measure_loop_hops`),
                      else ``hop_stream_s`` + ``stream.read`` of the image
``slopes``            ``component.slopes.<sensor>`` (the estimator, the reference subtraction,
                      the slopes write) + ``stream.write`` of the 32-byte timing record
``slopes_hop``        likewise, ``hop.loop.<sensor>.slopes_to_controller`` at the slopes' bytes, or
                      ``hop_stream_s`` + ``stream.read`` of the slopes
``controller``        ``component.controller.<law>`` (the law, the command write) +
                      ``stream.write`` of the timing record
====================  ========================================================================

A hop in a running loop costs more than between two quiet processes, and more in a large
loop than in a small one: the woken component's code and data are refetched from memory after
the camera's work in the frame period churned the shared cache. The hop tables are
interpolated (log-log) between the loops measured, and held at the nearest measured loop's
beyond them (once the cache is churned in full, a longer period costs no more). That is a
rough guess: a hop depends on how busy the loop keeps the cores more than on the frame's
bytes (BENCHMARKS.md), so measure the loop sizes you predict.

``slopes`` and ``controller`` run on the ``cpu`` resource (the machine's cores) beside the
loop's other busy processes (``camera_busy`` and the others of ``busy``, which keep
cores busy while a frame goes through: the simulated camera computes the next frame), so they
contend for cores when the machine has fewer than they need.

The measured loop (:meth:`dao.loop.AOLoop.latency`) reports the same two stages:
``camera_to_slopes`` (``wfs_hop + slopes``) and ``slopes_to_command``
(``slopes_hop + controller``), and the end to end (camera frame to DM command).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from dao.latency.model import Cost, Pipeline, Prediction, Resource, Stage, predict
from dao.latency.profile import LOOPS, HardwareProfile, KernelTable, Quantiles, loop_geometry

__all__ = ["loop_pipeline", "predict_loop", "measure_loop", "measure_loop_hops",
           "measure_frames", "measured_frame", "MEASURED_STAGES", "TRACED_STAGES", "HOPS"]

#: The hops of the loop: (input stream, component role) by name.
HOPS = {"wfs_to_slopes": ("wfs_image", "slopes"), "slopes_to_controller": ("slopes", "controller")}

#: The loop's measured stages (:meth:`dao.loop.AOLoop.latency`) as sums of model stages.
MEASURED_STAGES = {
    "camera_to_slopes": ("wfs_hop", "slopes"),
    "slopes_to_command": ("slopes_hop", "controller"),
}


def _cost(q: Quantiles) -> Cost:
    return Cost.samples(q.samples_s)


def _config(config: str | os.PathLike | Mapping | None, n_subap: int | None,
            sensor: str | None) -> dict[str, Any]:
    from dao.loop.config import load_loop_config

    over: dict[str, Any] = {}
    if n_subap is not None:
        over["bench"] = {"n_subap": int(n_subap)}
    if sensor is not None:
        over["sensor"] = {"type": sensor}
    return load_loop_config(dict(config) if isinstance(config, Mapping) else config, **over)


def loop_pipeline(config: str | os.PathLike | Mapping | None = None,
                  profile: HardwareProfile | None = None, *, n_subap: int | None = None,
                  sensor: str | None = None, period_s: float | None = None,
                  busy_cores: float = 1.0) -> Pipeline:
    """The :class:`~dao.latency.model.Pipeline` of a loop configuration on a machine.

    Parameters
    ----------
    config : path, dict or None
        A loop configuration (TOML file or dict), as :class:`dao.loop.AOLoop` takes.
    profile : HardwareProfile
        The machine (:func:`dao.latency.profile.calibrate`, or a catalogue entry).
    n_subap, sensor : optional
        Override ``bench.n_subap`` and ``sensor.type``.
    period_s : float, optional
        Seconds between camera frames; default ``1 / bench.frame_rate``, or the period of
        this loop measured by :func:`measure_loop_hops` where that is longer (the simulated
        camera runs at its own pace when it cannot keep the configured rate).
    busy_cores : float
        Cores kept busy by the loop's other processes while a frame goes through (the
        simulated camera computing the next frame: 1); the stages share the others.

    Returns
    -------
    Pipeline
        Stages ``camera``, ``wfs_hop``, ``slopes``, ``slopes_hop``, ``controller``.

    Raises
    ------
    ValueError
        No profile, or a profile without the hop or kernels this loop needs (the message says
        which, and how to measure them).
    """
    if profile is None:
        raise ValueError("give a hardware profile: dao.latency.profile.calibrate(), or "
                         "HardwareProfile.load(path) of one saved by dao latency calibrate")
    cfg = _config(config, n_subap, sensor)
    kind = cfg["sensor"]["type"]
    n = int(cfg["bench"]["n_subap"])
    law = cfg["controller"]["law"]
    geo = _geometry(profile, kind, n)
    if profile.hop_stream_s is None and not any(k.startswith(f"hop.loop.{kind}.")
                                                for k in profile.kernels):
        raise ValueError(f"profile {profile.name!r} has no stream hop: calibrate this machine "
                         "(dao latency calibrate)")
    est = "shack-hartmann" if kind == "shack-hartmann" else "pyramid"
    timing = _cost(profile.cost("stream.write", geo["timing_bytes"]))
    slopes = _cost(profile.cost(f"component.slopes.{est}", geo["estimator_size"])) + timing
    ctl = _cost(profile.cost(f"component.controller.{law}", geo["matrix_elements"])) + timing

    def hop(name: str, nbytes: int) -> Cost:
        table = profile.kernels.get(f"hop.loop.{est}.{name}")
        if table is not None:  # measured in running loops: the wake-up and the read
            sizes = table.sizes
            return _cost(table.cost(min(max(nbytes, sizes[0]), sizes[-1])))
        return _cost(profile.hop_stream_s) + _cost(profile.cost("stream.read", nbytes))
    free = max(1, round(profile.cores - busy_cores))
    cpu = Resource("cpu", free)
    stages = [
        Stage("camera", 0.0),
        Stage("wfs_hop", hop("wfs_to_slopes", geo["wfs_bytes"]), ["camera"]),
        Stage("slopes", slopes, ["wfs_hop"], cpu),
        Stage("slopes_hop", hop("slopes_to_controller", geo["slopes_bytes"]), ["slopes"]),
        Stage("controller", ctl, ["slopes_hop"], cpu),
    ]
    if period_s is None:
        period_s = max(1.0 / float(cfg["bench"]["frame_rate"]),
                       float(geo.get("loop_period_s", 0.0)))
    return Pipeline(stages, [cpu], period_s=period_s)


def _geometry(profile: HardwareProfile, kind: str, n: int) -> dict[str, Any]:
    """The loop's sizes: from the profile if it measured this loop, else computed."""
    for geo in profile.loops.values():
        if geo.get("sensor") == kind and int(geo.get("n_subap", -1)) == n:
            return geo
    return loop_geometry(kind, n)


def predict_loop(config: str | os.PathLike | Mapping | None = None,
                 profile: HardwareProfile | None = None, *, frames: int = 4000,
                 rng: int = 0, **kwargs: Any) -> dict[str, Any]:
    """Predicted latencies of a loop configuration, as the loop reports its measured ones.

    Parameters
    ----------
    config, profile, kwargs
        See :func:`loop_pipeline`.
    frames : int
        Frames simulated.
    rng : int
        Seed.

    Returns
    -------
    dict
        ``latency_p50_s``, ``latency_p99_s`` (camera frame to DM command), and the same for
        each of :data:`MEASURED_STAGES` (``latency_camera_to_slopes_p50_s``...), seconds;
        ``bottleneck`` (the stage to speed up first) and ``prediction`` (the
        :class:`~dao.latency.model.Prediction`).
    """
    pipe = loop_pipeline(config, profile, **kwargs)
    pred: Prediction = predict(pipe, frames=frames, rng=rng)
    tl = pred.timeline
    out: dict[str, Any] = {}
    end = tl.end_to_end_s()
    out["latency_p50_s"], out["latency_p99_s"] = (float(np.percentile(end, q))
                                                  for q in (50, 99))
    for name, (first, last) in MEASURED_STAGES.items():
        before = tl.stage_latency_s(_upstream(pipe, first))
        span = tl.stage_latency_s(last) - before
        out[f"latency_{name}_p50_s"] = float(np.percentile(span, 50))
        out[f"latency_{name}_p99_s"] = float(np.percentile(span, 99))
    out["bottleneck"] = pred.bottleneck
    out["prediction"] = pred
    return out


def _upstream(pipe: Pipeline, name: str) -> str:
    inputs = pipe[name].inputs
    return inputs[0]


def measure_loop(config: str | os.PathLike | Mapping | None = None, *, frames: int = 2000,
                 settle: int = 300, n_subap: int | None = None, sensor: str | None = None,
                 gain: float = 0.4) -> dict[str, Any]:
    """Run the loop of ``config`` closed for ``frames`` frames and measure its latencies
    (the same figures as :func:`predict_loop`), and the wake-up of each of its hops.

    Returns
    -------
    dict
        ``latency_p50_s``, ``latency_p99_s`` and those of :data:`MEASURED_STAGES`,
        ``loop_rate_hz``, and ``hops``: ``{hop: wake-up samples (s)}`` for :data:`HOPS`
        (the input frame's write time to the component's ``start_ns``).
    """
    got = measure_frames(config, frames=frames, settle=settle, n_subap=n_subap,
                         sensor=sensor, gain=gain)
    return {k: v for k, v in got.items()
            if k not in ("frame_id", "start_s", "end_s", "latency_s")}


def measure_loop_hops(profile: HardwareProfile, n_subap: int = 10, frames: int = 2000,
                      sensor: str = "shack-hartmann", settle: int = 1000,
                      runs: int = 1) -> HardwareProfile:
    """Measure the hops of a running loop (the default configuration with ``n_subap``
    subapertures across and sensor ``sensor``) into the profile's ``hop.loop.<sensor>.*``
    tables, and the loop's frame period into ``profile.loops[label]["loop_period_s"]``;
    return the profile.

    Each hop's cost is the input frame's write time to the woken component's start (its
    ``start_ns``, after it read the frame), per frame: ``hop.loop.<sensor>.wfs_to_slopes`` at
    the image's bytes, ``hop.loop.<sensor>.slopes_to_controller`` at the slopes' bytes. The
    simulated camera runs at its own pace, slower than its configured rate in large loops:
    :func:`loop_pipeline` takes the period measured here for this loop. A hop in a running
    loop costs more than between two quiet processes (the caches are cold, the writer goes on
    working on the core the reader is woken on), and more in a large loop than in a small one:
    measure the loops whose sizes you predict, or ones around them (the tables are
    interpolated between them and held beyond).

    Parameters
    ----------
    n_subap, sensor
        The loop measured.
    frames : int
        Frames measured per run, after ``settle`` frames run first (the FIFOs' first pages,
        the caches and Numba warmed).
    runs : int
        Runs of the loop, each started anew; the hop's cost is the typical run's
        (:meth:`Quantiles.median_of`): on a shared machine, a run's tail moves by several
        times from one run to the next.
    """
    if runs < 1:
        raise ValueError(f"runs = {runs!r}: at least 1")

    geo = _geometry(profile, sensor, int(n_subap))
    label = next((k for k, v in LOOPS.items() if v == (sensor, int(n_subap))),
                 f"{sensor} {int(n_subap)}x{int(n_subap)}")
    profile.loops.setdefault(label, geo)
    got = [measure_loop(None, frames=frames, settle=settle, n_subap=n_subap, sensor=sensor)
           for _ in range(runs)]
    sizes = {"wfs_to_slopes": (geo["wfs_bytes"], "image bytes"),
             "slopes_to_controller": (geo["slopes_bytes"], "slopes bytes")}
    for name, (nbytes, unit) in sizes.items():
        key = f"hop.loop.{sensor}.{name}"
        table = profile.kernels.setdefault(key, KernelTable(
            key, unit, "a running loop's hop: the input frame's write time to "
            "the woken component's start_ns (after its read of the frame)"))
        table.add(nbytes, Quantiles.median_of(Quantiles.from_samples(g["hops"][name])
                                              for g in got), label)
    rates = ", ".join(f"{g['loop_rate_hz']:.0f}" for g in got)
    profile.loops[label]["loop_period_s"] = float(np.median([1.0 / g["loop_rate_hz"]
                                                             for g in got]))
    profile.notes[f"hops_{label}"] = (f"measured in {runs} run(s) of the running loop, "
                                      f"{frames} frames each after {settle}, at {rates} Hz; "
                                      "each quantile the median over the runs")
    return profile


#: The model stages a measured frame is cut into (:func:`measure_frames`), in the loop's order:
#: each one's start and end, as the running loop records them.
TRACED_STAGES = ("wfs_hop", "slopes", "slopes_hop", "controller")


def measure_frames(config: str | os.PathLike | Mapping | None = None, *, frames: int = 2000,
                   settle: int = 300, n_subap: int | None = None, sensor: str | None = None,
                   gain: float = 0.4) -> dict[str, Any]:
    """:func:`measure_loop`, and each measured frame's way through the loop, stage by stage.

    Per frame, the times of :data:`TRACED_STAGES` in s from the camera frame's write time:
    ``wfs_hop`` from the camera's write to the Slopes process' ``start_ns``, ``slopes`` from
    there to the slopes stream's write, ``slopes_hop`` from that write to the Controller's
    ``start_ns``, ``controller`` from there to the DM command's write.

    Returns
    -------
    dict
        What :func:`measure_loop` returns (``latency_p50_s``..., ``loop_rate_hz``, ``hops``),
        and ``frame_id`` (the frames every record of which was found, shape ``(n,)``),
        ``start_s`` and ``end_s`` (``{stage: array (n,)}``, s from the camera's write) and
        ``latency_s`` (camera write to DM command, the ``controller``'s end).
    """
    from dao.loop import AOLoop

    cfg = _config(config, n_subap, sensor)
    with AOLoop(cfg) as ao:
        ao.gain = gain
        ao.wait(settle)
        since = ao.frame
        ao.wait(frames)
        until = since + frames  # frames after these may still be under way
        out: dict[str, Any] = dict(ao.latency(since=since))
        rows = ao.streams["frames"].get_history()[:, :, 0]
        camera = {int(r[0]): int(r[1]) for r in rows if since < r[0] <= until}
        written = {}
        for key in ("slopes", "dm_command"):
            meta = ao.streams[key].history_metadata()
            written[key] = {int(c): int(t) for c, t in zip(meta.cnt2, meta.time_ns, strict=True)
                            if since < c <= until}
        started = {}
        for role in ("slopes", "controller"):
            t = ao.timing(role)
            started[role] = {int(f): int(s) for f, s in zip(t["frame_id"], t["start_ns"],
                                                            strict=True)}
    hops = {}
    for name, (stream, role) in HOPS.items():
        w = camera if stream == "wfs_image" else written[stream]
        hops[name] = np.array([(s - w[f]) * 1e-9 for f, s in started[role].items() if f in w])
    out["hops"] = hops
    ids = sorted(f for f in camera if f in written["slopes"] and f in written["dm_command"]
                 and f in started["slopes"] and f in started["controller"])
    t0 = np.array([camera[f] for f in ids], dtype=np.int64)
    marks = [np.array([d[f] for f in ids], dtype=np.int64) - t0
             for d in (started["slopes"], written["slopes"], started["controller"],
                       written["dm_command"])]
    edges = [np.zeros(len(ids), dtype=np.int64), *marks]
    out["frame_id"] = np.array(ids, dtype=np.int64)
    out["start_s"] = {s: edges[i] * 1e-9 for i, s in enumerate(TRACED_STAGES)}
    out["end_s"] = {s: edges[i + 1] * 1e-9 for i, s in enumerate(TRACED_STAGES)}
    out["latency_s"] = out["end_s"]["controller"].copy()
    return out


def measured_frame(measured: Mapping[str, Any], which: str | int = "median"
                   ) -> tuple[int, dict[str, tuple[float, float]]]:
    """One frame of :func:`measure_frames`, as :func:`dao.latency.plot.timeline_figure` draws it.

    Parameters
    ----------
    measured : dict
        What :func:`measure_frames` returned.
    which : "median" or int
        ``"median"``: the frame of median end-to-end latency; an int: that frame id.

    Returns
    -------
    (int, dict)
        The frame id, and ``{stage: (start_s, end_s)}`` in s from the camera's write.
    """
    ids = np.asarray(measured["frame_id"])
    if ids.size == 0:
        raise ValueError("no measured frame: every frame's records were missing")
    if isinstance(which, str):
        if which != "median":
            raise ValueError(f"which is 'median' or a frame id, got {which!r}")
        lat = np.asarray(measured["latency_s"])
        i = int(np.argsort(lat, kind="stable")[(lat.size - 1) // 2])
    else:
        hit = np.flatnonzero(ids == int(which))
        if hit.size == 0:
            raise ValueError(f"frame {which} was not measured (frames {ids[0]} to {ids[-1]})")
        i = int(hit[0])
    return int(ids[i]), {s: (float(measured["start_s"][s][i]), float(measured["end_s"][s][i]))
                         for s in TRACED_STAGES}
