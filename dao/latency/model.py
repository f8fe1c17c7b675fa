"""Pipeline latency model: a DAG of stages, frames cut into packets, simulated frame by frame.

An AO real-time pipeline is modelled as stages (camera readout, pixel calibration, centroiding,
reconstruction, the DM write, a network hop...) connected by their inputs. Each frame is cut
into packets per stage; a packet of a stage is processed once

* every packet of EVERY input that covers the same fraction of the frame has been produced
  (a stage waits for all its inputs, not only the last one listed),
* the previous packet of the same stage is done (in-order; one packet of a stage at a time),
* the previous frame's last packet of the same stage is done (one frame at a time),
* for a source (a stage without inputs, e.g. the camera readout), the frame has started,
* a server of the stage's :class:`Resource` is free (stages sharing cores contend for them).

Without contention this is a max-plus flow shop; with it, each resource is list-scheduled (see
:meth:`Pipeline.simulate`). Costs are seconds, drawn per frame from a :class:`Cost` distribution
so that a calibrated profile (e.g. measured per-stage times) feeds it directly.

Units are explicit everywhere: seconds (``_s``), bytes, bytes/s. Bits appear only through the
named conversions :func:`bits_to_bytes`, :func:`gbit_per_s` and :func:`mbit_per_s`, so a link
rated in Gbit/s is never taken for GB/s. :func:`roofline_s` is the time of a kernel bound by
compute OR memory: the larger of the two, never their sum.

Pure numpy and the standard library; no I/O.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dao.runtime.timing import percentiles

__all__ = [
    "BITS_PER_BYTE",
    "Cost",
    "Pipeline",
    "Prediction",
    "Resource",
    "Stage",
    "Timeline",
    "bits_to_bytes",
    "bytes_to_bits",
    "gbit_per_s",
    "gbyte_per_s",
    "mbit_per_s",
    "predict",
    "roofline_s",
    "transfer_s",
]

#: Bits in one byte: the only place the factor 8 of a link's rate lives.
BITS_PER_BYTE = 8

#: Key prefix of the end-to-end latency in :meth:`Timeline.summary` (not a valid stage name).
END_TO_END = "end_to_end"

# 99th percentile of the standard normal distribution (scipy.stats.norm.ppf(0.99)).
_Z99 = 2.3263478740408408
# Draws used to estimate the percentiles of a sum of random costs (fixed seed: reproducible).
_MC_DRAWS = 200_000


# --------------------------------------------------------------------------------------------
# units


def bits_to_bytes(bits: float) -> float:
    """Bytes in ``bits`` bits (divides by :data:`BITS_PER_BYTE`)."""
    return bits / BITS_PER_BYTE


def bytes_to_bits(nbytes: float) -> float:
    """Bits in ``nbytes`` bytes (multiplies by :data:`BITS_PER_BYTE`)."""
    return nbytes * BITS_PER_BYTE


def gbit_per_s(gbit: float) -> float:
    """A link rate given in Gbit/s (10**9 bits per second, as links are sold), in bytes/s.

    >>> gbit_per_s(10.0)  # 10 GbE
    1250000000.0
    """
    return bits_to_bytes(gbit * 1e9)


def mbit_per_s(mbit: float) -> float:
    """A link rate given in Mbit/s (10**6 bits per second), in bytes/s."""
    return bits_to_bytes(mbit * 1e6)


def gbyte_per_s(gbyte: float) -> float:
    """A rate given in GB/s (10**9 bytes per second, e.g. a memory bandwidth), in bytes/s."""
    return gbyte * 1e9


def _nonneg(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v


def _positive(name: str, value: float) -> float:
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def transfer_s(nbytes: float, bytes_per_s: float, latency_s: float = 0.0) -> float:
    """Time in s to move ``nbytes`` bytes over a link of ``bytes_per_s`` bytes/s.

    Parameters
    ----------
    nbytes : float
        Payload in bytes.
    bytes_per_s : float
        Link rate in bytes/s; convert a rate in bits/s with :func:`gbit_per_s` first.
    latency_s : float
        Fixed latency in s added once (wire, switch, software stack).

    Returns
    -------
    float
        ``latency_s + nbytes / bytes_per_s``, in s.
    """
    return _nonneg("latency_s", latency_s) + _nonneg("nbytes", nbytes) / _positive(
        "bytes_per_s", bytes_per_s)


def roofline_s(flops: float, nbytes: float, flops_per_s: float, bytes_per_s: float) -> float:
    """Time in s of a kernel by the roofline model: the LARGER of compute and memory time.

    Parameters
    ----------
    flops : float
        Floating-point operations of the kernel.
    nbytes : float
        Bytes the kernel moves to or from memory.
    flops_per_s : float
        Sustained compute rate of the machine, in flop/s.
    bytes_per_s : float
        Sustained memory bandwidth, in bytes/s.

    Returns
    -------
    float
        ``max(flops / flops_per_s, nbytes / bytes_per_s)``, in s: compute and memory overlap,
        so their times are not added.
    """
    return max(_nonneg("flops", flops) / _positive("flops_per_s", flops_per_s),
               _nonneg("nbytes", nbytes) / _positive("bytes_per_s", bytes_per_s))


# --------------------------------------------------------------------------------------------
# costs


class Cost:
    """A distribution of durations, in s.

    Build one with :meth:`constant`, :meth:`samples` (an empirical profile, drawn by bootstrap)
    or :meth:`lognormal`; combine with ``cost * k`` / ``k * cost`` (scaling by ``k >= 0``),
    ``cost / k`` and ``cost + other`` (the sum of independent draws; ``other`` a Cost or a number
    of seconds). :meth:`draw` returns ``n`` draws; :attr:`p50`, :attr:`p99` and :attr:`mean` are
    exact for constant, empirical and log-normal costs and their scalings, and estimated from
    200 000 draws (fixed seed) for sums of random costs.
    """

    __slots__ = ("_kind", "_args", "_pct")

    def __init__(self, kind: str, *args: Any) -> None:
        # private: use the constructors
        self._kind = kind
        self._args = args
        self._pct: tuple[float, float] | None = None

    # constructors
    @classmethod
    def constant(cls, seconds: float) -> Cost:
        """Always ``seconds`` s."""
        return cls("constant", _nonneg("Cost.constant seconds", seconds))

    @classmethod
    def samples(cls, seconds: Any) -> Cost:
        """Measured durations in s (e.g. a calibration run), drawn with replacement."""
        a = np.array(seconds, dtype=np.float64).ravel()
        if a.size == 0:
            raise ValueError("Cost.samples needs at least one duration in s, got none")
        if not np.all(np.isfinite(a)) or np.any(a < 0):
            raise ValueError("Cost.samples durations must be finite and >= 0 s; drop the NaNs "
                             "or negative values of the profile first")
        a.setflags(write=False)
        return cls("samples", a)

    @classmethod
    def lognormal(cls, p50_s: float, p99_s: float) -> Cost:
        """Log-normal durations with median ``p50_s`` and 99th percentile ``p99_s`` (s)."""
        p50 = _positive("Cost.lognormal p50_s", p50_s)
        p99 = _positive("Cost.lognormal p99_s", p99_s)
        if p99 < p50:
            raise ValueError(f"Cost.lognormal needs p99_s >= p50_s, got p50_s={p50_s!r}, "
                             f"p99_s={p99_s!r}")
        if p99 == p50:
            return cls.constant(p50)
        return cls("lognormal", math.log(p50), math.log(p99 / p50) / _Z99)

    @classmethod
    def of(cls, value: float | Cost) -> Cost:
        """``value`` as a Cost: a Cost is returned as is, a number is a constant in s."""
        if isinstance(value, Cost):
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise TypeError(f"a cost is a number of seconds or a Cost, got {value!r}")
        return cls.constant(float(value))

    # sampling
    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` independent durations in s (float64 array of shape ``(n,)``)."""
        k, a = self._kind, self._args
        if k == "constant":
            return np.full(n, a[0])
        if k == "samples":
            return a[0][rng.integers(0, a[0].size, size=n)]
        if k == "lognormal":
            return np.exp(a[0] + a[1] * rng.standard_normal(n))
        if k == "scaled":
            return a[0].draw(rng, n) * a[1]
        return a[0].draw(rng, n) + a[1].draw(rng, n)  # "sum"

    @property
    def is_constant(self) -> bool:
        """Whether every draw is the same value."""
        k, a = self._kind, self._args
        if k in ("constant", "scaled", "sum"):
            return k == "constant" or all(isinstance(x, (int, float)) or x.is_constant
                                           for x in a)
        return k == "samples" and bool(np.all(a[0] == a[0][0]))

    @property
    def mean(self) -> float:
        """Mean duration in s."""
        k, a = self._kind, self._args
        if k == "constant":
            return a[0]
        if k == "samples":
            return float(a[0].mean())
        if k == "lognormal":
            return math.exp(a[0] + a[1] ** 2 / 2)
        if k == "scaled":
            return a[0].mean * a[1]
        return a[0].mean + a[1].mean

    def _percentiles(self) -> tuple[float, float]:
        if self._pct is None:
            k, a = self._kind, self._args
            if k == "constant":
                self._pct = (a[0], a[0])
            elif k == "samples":
                p50, p99 = percentiles(a[0], (50, 99))
                self._pct = (p50, p99)
            elif k == "lognormal":
                self._pct = (math.exp(a[0]), math.exp(a[0] + _Z99 * a[1]))
            elif k == "scaled":
                p50, p99 = a[0]._percentiles()
                self._pct = (p50 * a[1], p99 * a[1])
            elif a[0].is_constant or a[1].is_constant:
                c, x = (a[0], a[1]) if a[0].is_constant else (a[1], a[0])
                p50, p99 = x._percentiles()
                self._pct = (p50 + c.mean, p99 + c.mean)
            else:
                p50, p99 = percentiles(self.draw(np.random.default_rng(0), _MC_DRAWS), (50, 99))
                self._pct = (p50, p99)
        return self._pct

    @property
    def p50(self) -> float:
        """Median duration in s."""
        return self._percentiles()[0]

    @property
    def p99(self) -> float:
        """99th percentile of the duration in s."""
        return self._percentiles()[1]

    # arithmetic
    def __mul__(self, k: float) -> Cost:
        if isinstance(k, Cost):
            return NotImplemented
        f = _nonneg("a Cost's scale factor", k)
        if self._kind == "constant":
            return Cost.constant(self._args[0] * f)
        return Cost("scaled", self, f)

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Cost:
        return self * (1.0 / _positive("a Cost's divisor", k))

    def __add__(self, other: float | Cost) -> Cost:
        o = Cost.of(other)
        if self._kind == "constant" and o._kind == "constant":
            return Cost.constant(self._args[0] + o._args[0])
        return Cost("sum", self, o)

    __radd__ = __add__

    def __repr__(self) -> str:
        k, a = self._kind, self._args
        if k == "constant":
            return f"Cost.constant({a[0]!r})"
        if k == "samples":
            return f"Cost.samples(<{a[0].size} durations, p50={self.p50:.3g} s>)"
        if k == "lognormal":
            return f"Cost.lognormal(p50_s={self.p50:.3g}, p99_s={self.p99:.3g})"
        if k == "scaled":
            return f"({a[0]!r} * {a[1]!r})"
        return f"({a[0]!r} + {a[1]!r})"


# --------------------------------------------------------------------------------------------
# model


@dataclass(frozen=True)
class Resource:
    """Servers that stages share: cores, a GPU, a link.

    Parameters
    ----------
    name : str
        Name the stages refer to.
    servers : int
        At most this many packets, of any of the stages bound to the resource, run at once.
    """

    name: str
    servers: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a Resource needs a non-empty name, got {self.name!r}")
        if (isinstance(self.servers, bool) or not isinstance(self.servers, (int, np.integer))
                or self.servers < 1):
            raise ValueError(f"resource {self.name!r}: servers must be an integer >= 1, got "
                             f"{self.servers!r}")


@dataclass(frozen=True)
class Stage:
    """One processing step of the pipeline.

    Parameters
    ----------
    name : str
        Unique name.
    cost : float or Cost
        Processing time of a whole frame, in s (a number, or a distribution drawn once per
        frame). Each of the frame's packets takes ``cost / packets + overhead_s``.
    inputs : sequence of str
        Names of the upstream stages; the stage waits for ALL of them. None: a source, e.g. a
        camera readout, which starts at the frame's start and emits its packets as it reads.
    resource : str, Resource or None
        What the stage runs on; stages sharing a resource contend for its servers. None: the
        stage has its own (it never waits for a server).
    packets : int
        Packets a frame is cut into for this stage (>= 1).
    overhead_s : float
        Fixed time per packet, in s (launch, synchronisation, a transfer's setup).
    """

    name: str
    cost: float | Cost
    inputs: Sequence[str] = ()
    resource: str | Resource | None = None
    packets: int = 1
    overhead_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a Stage needs a non-empty name, got {self.name!r}")
        if self.name == END_TO_END:
            raise ValueError(f"{END_TO_END!r} is reserved for the end-to-end latency; rename "
                             "the stage")
        try:
            cost = Cost.of(self.cost)
        except (TypeError, ValueError) as e:
            raise ValueError(f"stage {self.name!r}: {e}") from None
        object.__setattr__(self, "cost", cost)
        inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(self.inputs)
        for i in inputs:
            if not isinstance(i, str):
                raise ValueError(f"stage {self.name!r}: inputs are stage names (str), got {i!r}")
        dup = sorted({i for i in inputs if inputs.count(i) > 1})
        if dup:
            raise ValueError(f"stage {self.name!r} lists input(s) {dup} more than once")
        object.__setattr__(self, "inputs", inputs)
        p = self.packets
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise ValueError(f"stage {self.name!r}: packets must be an integer >= 1 (the number "
                             f"of pieces a frame is cut into), got {p!r}")
        object.__setattr__(self, "packets", int(p))
        object.__setattr__(self, "overhead_s",
                           _nonneg(f"stage {self.name!r}: overhead_s", self.overhead_s))
        if self.resource is not None and not isinstance(self.resource, (str, Resource)):
            raise ValueError(f"stage {self.name!r}: resource is a name, a Resource or None, got "
                             f"{self.resource!r}")

    @property
    def resource_name(self) -> str | None:
        """Name of the stage's resource, or None."""
        r = self.resource
        return r.name if isinstance(r, Resource) else r

    def scaled(self, factor: float) -> Stage:
        """This stage with its cost and per-packet overhead multiplied by ``factor``."""
        return dataclasses.replace(self, cost=self.cost * factor,
                                   overhead_s=self.overhead_s * factor)


def _last_input_packet(j: int, p_in: int, p: int) -> int:
    """Index of the last input packet (of ``p_in``) that packet ``j`` (of ``p``) needs."""
    return -(-(j + 1) * p_in // p) - 1  # ceil((j + 1) * p_in / p) - 1, in integers


@dataclass(frozen=True)
class Timeline:
    """Times of every packet of a simulation, in s relative to each frame's start.

    Attributes
    ----------
    stages : tuple of str
        Stage names in topological order.
    sinks : tuple of str
        Stages no other stage reads.
    period_s : float
        Frame period in s: the pipeline's, or (free-running) the mean interval between frames.
    frame_start_s : numpy.ndarray
        Start of each frame in s from the first's, shape ``(frames,)``.
    ready_s, start_s, end_s : dict of str to numpy.ndarray
        Per stage, shape ``(frames, packets)``: when the packet's inputs and predecessors were
        done (ready), when it got a server (start) and when it finished (end).
    """

    stages: tuple[str, ...]
    sinks: tuple[str, ...]
    period_s: float
    frame_start_s: np.ndarray
    ready_s: Mapping[str, np.ndarray]
    start_s: Mapping[str, np.ndarray]
    end_s: Mapping[str, np.ndarray]

    @property
    def frames(self) -> int:
        """Number of frames simulated."""
        return int(self.frame_start_s.size)

    def stage_latency_s(self, stage: str) -> np.ndarray:
        """Per frame: end of ``stage``'s last packet minus the frame's start, in s."""
        if stage not in self.end_s:
            raise KeyError(f"no stage {stage!r}; stages: {', '.join(self.stages)}")
        return self.end_s[stage][:, -1].copy()

    def end_to_end_s(self) -> np.ndarray:
        """Per frame: end of the last sink's last packet minus the frame's start, in s."""
        return np.max([self.end_s[s][:, -1] for s in self.sinks], axis=0)

    def summary(self, skip: int = 0) -> dict[str, float]:
        """p50 and p99 in s of every stage's latency and of the end-to-end latency.

        Parameters
        ----------
        skip : int
            Leading frames left out (a warm-up).

        Returns
        -------
        dict
            ``{stage}_p50_s``, ``{stage}_p99_s`` per stage (topological order), then
            ``end_to_end_p50_s`` and ``end_to_end_p99_s``.
        """
        out: dict[str, float] = {}
        for s in self.stages:
            p50, p99 = percentiles(self.stage_latency_s(s)[skip:], (50, 99))
            out[f"{s}_p50_s"], out[f"{s}_p99_s"] = p50, p99
        p50, p99 = percentiles(self.end_to_end_s()[skip:], (50, 99))
        out[f"{END_TO_END}_p50_s"], out[f"{END_TO_END}_p99_s"] = p50, p99
        return out

    def to_xarray(self) -> Any:
        """An ``xarray.Dataset``: ``{stage}_{ready,start,end}_s`` over (frame, {stage}_packet)."""
        import xarray as xr

        data: dict[str, Any] = {"frame_start_s": (("frame",), self.frame_start_s,
                                                  {"units": "s"})}
        for s in self.stages:
            dims = ("frame", f"{s}_packet")
            for what, table in (("ready", self.ready_s), ("start", self.start_s),
                                ("end", self.end_s)):
                data[f"{s}_{what}_s"] = (dims, table[s], {"units": "s"})
        return xr.Dataset(data, coords={"frame": np.arange(self.frames)},
                          attrs={"period_s": self.period_s, "sinks": list(self.sinks)})


class Pipeline:
    """A DAG of :class:`Stage` on shared :class:`Resource`, at a frame period.

    Parameters
    ----------
    stages : iterable of Stage
        The stages, in any order (they are sorted topologically, ties in the order given).
    resources : iterable of Resource
        The shared resources; a :class:`Resource` given directly to a stage is added.
    period_s : float or None
        Frame period in s: frame ``k`` starts at ``k * period_s`` (the end of its exposure and
        the start of its readout). None: free-running, each frame starts as soon as every source
        finished reading the previous one (frame 0 at 0).

    Raises
    ------
    ValueError
        Duplicate or unknown stage names, cycles, unknown or conflicting resources, a period
        that is not > 0.
    """

    def __init__(self, stages: Iterable[Stage], resources: Iterable[Resource] = (),
                 period_s: float | None = None) -> None:
        stages = list(stages)
        if not stages:
            raise ValueError("a Pipeline needs at least one Stage")
        for s in stages:
            if not isinstance(s, Stage):
                raise ValueError(f"Pipeline stages must be Stage objects, got {s!r}")
        by_name: dict[str, Stage] = {}
        for s in stages:
            if s.name in by_name:
                raise ValueError(f"two stages are named {s.name!r}; stage names must be unique")
            by_name[s.name] = s
        for s in stages:
            unknown = [i for i in s.inputs if i not in by_name]
            if unknown:
                raise ValueError(f"stage {s.name!r} has unknown input(s) {unknown}; known "
                                 f"stages: {', '.join(by_name)}")
        res: dict[str, Resource] = {}
        for r in [*resources, *(s.resource for s in stages if isinstance(s.resource, Resource))]:
            if not isinstance(r, Resource):
                raise ValueError(f"Pipeline resources must be Resource objects, got {r!r}")
            if r.name in res and res[r.name] != r:
                raise ValueError(f"resource {r.name!r} is given twice with different servers "
                                 f"({res[r.name].servers} and {r.servers}); give it once")
            res[r.name] = r
        for s in stages:
            if s.resource_name is not None and s.resource_name not in res:
                known = ", ".join(res) or "none"
                raise ValueError(f"stage {s.name!r} runs on unknown resource "
                                 f"{s.resource_name!r}; pass Resource({s.resource_name!r}, "
                                 f"servers=...) in resources (known: {known})")
        if period_s is not None:
            period_s = _positive("period_s", period_s)
        self.period_s: float | None = period_s
        self.resources: dict[str, Resource] = res
        self.stages: tuple[Stage, ...] = tuple(_topological(stages, by_name))
        self._by_name = {s.name: s for s in self.stages}
        read = {i for s in self.stages for i in s.inputs}
        self.sources: tuple[str, ...] = tuple(s.name for s in self.stages if not s.inputs)
        self.sinks: tuple[str, ...] = tuple(s.name for s in self.stages if s.name not in read)

    def __getitem__(self, name: str) -> Stage:
        return self._by_name[name]

    def __repr__(self) -> str:
        return (f"Pipeline({[s.name for s in self.stages]}, period_s={self.period_s!r}, "
                f"resources={list(self.resources.values())})")

    def replace(self, stage: Stage) -> Pipeline:
        """A copy with the stage of the same name replaced by ``stage``."""
        if stage.name not in self._by_name:
            raise KeyError(f"no stage {stage.name!r}; stages: {', '.join(self._by_name)}")
        return Pipeline([stage if s.name == stage.name else s for s in self.stages],
                        self.resources.values(), self.period_s)

    @property
    def contended(self) -> tuple[str, ...]:
        """Resources with fewer servers than stages bound to them (the only ones that queue).

        A stage runs one packet at a time, so a resource with as many servers as stages never
        makes a packet wait.
        """
        users: dict[str, int] = {}
        for s in self.stages:
            if s.resource_name is not None:
                users[s.resource_name] = users.get(s.resource_name, 0) + 1
        return tuple(r for r, n in users.items() if n > self.resources[r].servers)

    def simulate(self, frames: int, rng: None | int | np.random.Generator = None,
                 method: str = "auto") -> Timeline:
        """Simulate ``frames`` frames through the pipeline.

        Each stage's whole-frame cost is drawn once per frame (independent streams per stage,
        from ``rng``) and split evenly over its packets, plus ``overhead_s`` each, so a stage's
        frame time keeps the calibrated distribution.

        Scheduling policy: a packet is *ready* when all its dependencies are done (every input's
        covering packet, its own previous packet, its stage's previous frame, the frame start
        for a source). Packets are dispatched in order of ready time; each takes the server of
        its resource that frees first, starting at ``max(ready, server free)`` (first come,
        first served; no pre-emption, no backfilling). Packets ready at the same time go
        earlier frame first, then upstream stage first (topological order), then lower packet
        index. A stage without a resource starts every packet when ready.

        Parameters
        ----------
        frames : int
            Number of frames (>= 1).
        rng : None, int or numpy.random.Generator
            Seed of the cost draws; the same int gives the same draws (a stage scaled with
            :meth:`Stage.scaled` keeps its draws, scaled).
        method : {"auto", "event", "maxplus"}
            "event": the discrete-event list scheduler (any pipeline). "maxplus": the vectorised
            max-plus recurrence, valid without contention (no resource has fewer servers than
            stages) and with a period or a single source. "auto" picks "maxplus" when valid.

        Returns
        -------
        Timeline
        """
        if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 1:
            raise ValueError(f"frames must be an integer >= 1, got {frames!r}")
        frames = int(frames)
        vector_ok = not self.contended and (self.period_s is not None or len(self.sources) == 1)
        if method == "auto":
            method = "maxplus" if vector_ok else "event"
        if method == "maxplus" and not vector_ok:
            raise ValueError("method='maxplus' needs a pipeline without contended resources and "
                             "with a period_s or a single source; use method='event'")
        if method not in ("event", "maxplus"):
            raise ValueError(f"method is 'auto', 'event' or 'maxplus', got {method!r}")
        seq = _seed_sequence(rng)
        per_packet = []
        for s, child in zip(self.stages, seq.spawn(len(self.stages)), strict=True):
            x = s.cost.draw(np.random.default_rng(child), frames)
            per_packet.append(x / s.packets + s.overhead_s)
        run = self._maxplus if method == "maxplus" else self._event
        start, ready, begin, end = run(per_packet, frames)
        if self.period_s is not None:
            period = self.period_s
        elif frames > 1:
            period = float(start[-1] - start[0]) / (frames - 1)
        else:
            period = float("nan")
        rel = start[:, None]
        names = tuple(s.name for s in self.stages)
        return Timeline(names, self.sinks, period, start - start[0],
                        {n: a - rel for n, a in zip(names, ready, strict=True)},
                        {n: a - rel for n, a in zip(names, begin, strict=True)},
                        {n: a - rel for n, a in zip(names, end, strict=True)})

    # the vectorised max-plus recurrence (no contention)
    def _maxplus(self, per_packet: list[np.ndarray], frames: int):
        idx = {s.name: i for i, s in enumerate(self.stages)}
        ready: list[np.ndarray] = []
        begin: list[np.ndarray] = []
        end: list[np.ndarray] = []
        start = (np.arange(frames) * self.period_s if self.period_s is not None
                 else np.zeros(frames))
        for si, s in enumerate(self.stages):
            p = s.packets
            d = np.repeat(per_packet[si], p)
            if not s.inputs:
                a = np.repeat(start, p)
            else:
                a = np.full((frames, p), -np.inf)
                for u in s.inputs:
                    eu = end[idx[u]]
                    last = [_last_input_packet(j, eu.shape[1], p) for j in range(p)]
                    np.maximum(a, eu[:, last], out=a)
                a = a.ravel()
            # e[n] = max(a[n], e[n-1]) + d[n]  <=>  e = C + cummax(a - C_prev), C = cumsum(d)
            c = np.cumsum(d)
            e = c + np.maximum.accumulate(a - (c - d))
            prev = np.empty_like(e)
            prev[0] = -np.inf
            prev[1:] = e[:-1]
            b = np.maximum(a, prev)
            if not s.inputs and self.period_s is None:  # free-running single source
                start = np.concatenate(([0.0], e[p - 1::p][:-1]))
            ready.append(b.reshape(frames, p))
            begin.append(b.reshape(frames, p))
            end.append(e.reshape(frames, p))
        return start, ready, begin, end

    # the discrete-event list scheduler (any pipeline)
    def _event(self, per_packet: list[np.ndarray], frames: int):
        stages = self.stages
        idx = {s.name: i for i, s in enumerate(stages)}
        off = np.concatenate(([0], np.cumsum([s.packets for s in stages]))).tolist()
        width = off[-1]  # packets per frame; packet (k, s, j) has id k * width + off[s] + j
        total = frames * width
        free_running = self.period_s is None
        # dependents of each packet, as id offsets (>= width: the next frame), and counts
        deps: list[list[int]] = [[] for _ in range(width)]
        count = np.zeros(width, np.int64)
        first = np.zeros(width, np.int64)  # dependencies of frame 0 (no previous frame)
        for si, s in enumerate(stages):
            p, o = s.packets, off[si]
            for j in range(p):
                deps[o + j].extend([o + j + 1] if j + 1 < p else [])
                count[o + j] = len(s.inputs) + 1
                first[o + j] = len(s.inputs) + (j > 0)
            for u in s.inputs:
                ui = idx[u]
                for j in range(p):
                    deps[off[ui] + _last_input_packet(j, stages[ui].packets, p)].append(o + j)
            if s.inputs or not free_running:
                deps[o + p - 1].append(width + o)  # next frame waits for this one
        if free_running:  # every source's next frame waits for every source's last packet
            src = [off[idx[n]] for n in self.sources]
            for o in src:
                count[o] = len(src)
            for n in self.sources:
                last = off[idx[n]] + stages[idx[n]].packets - 1
                deps[last].extend(width + o for o in src)
        cnt = np.concatenate([first, np.tile(count, frames - 1)]).tolist()
        floor = np.zeros((frames, width))
        if not free_running:
            for n in self.sources:
                si = idx[n]
                floor[:, off[si]:off[si + 1]] = (np.arange(frames) * self.period_s)[:, None]
        ready = floor.ravel().tolist()
        dur = np.empty((frames, width))
        for si in range(len(stages)):
            dur[:, off[si]:off[si + 1]] = per_packet[si][:, None]
        dur = dur.ravel().tolist()
        contended = set(self.contended)
        rnames = sorted(contended)
        servers = [[0.0] * self.resources[r].servers for r in rnames]
        res_of = [-1] * width
        for si, s in enumerate(stages):
            if s.resource_name in contended:
                res_of[off[si]:off[si + 1]] = [rnames.index(s.resource_name)] * s.packets
        begin = [0.0] * total
        end = [0.0] * total
        heap = [(ready[i], i) for i in range(width) if cnt[i] == 0]
        heapq.heapify(heap)
        pop, push, replace = heapq.heappop, heapq.heappush, heapq.heapreplace
        while heap:
            r, i = pop(heap)
            base = i - i % width
            res = res_of[i - base]
            if res >= 0:
                srv = servers[res]
                f = srv[0]
                b = r if r >= f else f
                e = b + dur[i]
                replace(srv, e)
            else:
                b = r
                e = r + dur[i]
            begin[i] = b
            end[i] = e
            for d in deps[i - base]:
                j = base + d
                if j >= total:
                    continue
                if ready[j] < e:
                    ready[j] = e
                c = cnt[j] - 1
                cnt[j] = c
                if c == 0:
                    push(heap, (ready[j], j))
        shape = (frames, width)
        ready_a, begin_a, end_a = (np.array(x).reshape(shape) for x in (ready, begin, end))
        if free_running:
            start = ready_a[:, off[idx[self.sources[0]]]].copy()
        else:
            start = np.arange(frames) * self.period_s

        def cut(a: np.ndarray) -> list[np.ndarray]:
            return [a[:, off[si]:off[si + 1]] for si in range(len(stages))]

        return start, cut(ready_a), cut(begin_a), cut(end_a)


def _seed_sequence(rng: None | int | np.random.Generator) -> np.random.SeedSequence:
    if isinstance(rng, np.random.Generator):
        return np.random.SeedSequence(int(rng.integers(2**63)))
    if rng is None or (isinstance(rng, (int, np.integer)) and not isinstance(rng, bool)):
        return np.random.SeedSequence(rng)
    raise ValueError(f"rng is None, an int seed or a numpy Generator, got {rng!r}")


def _topological(stages: list[Stage], by_name: Mapping[str, Stage]) -> list[Stage]:
    """Stages upstream first (Kahn), ties in the order given; ValueError naming a cycle."""
    pending = {s.name: len(s.inputs) for s in stages}
    readers: dict[str, list[str]] = {s.name: [] for s in stages}
    for s in stages:
        for i in s.inputs:
            readers[i].append(s.name)
    order: list[Stage] = []
    position = {s.name: k for k, s in enumerate(stages)}
    ready = [s.name for s in stages if not s.inputs]
    while ready:
        ready.sort(key=position.__getitem__)
        n = ready.pop(0)
        order.append(by_name[n])
        for r in readers[n]:
            pending[r] -= 1
            if pending[r] == 0:
                ready.append(r)
    if len(order) < len(stages):
        left = {n for n, c in pending.items() if c > 0}
        # walk inputs among the stages left until a name repeats: that is a cycle
        path = [min(left, key=position.__getitem__)]
        while True:
            nxt = next(i for i in by_name[path[-1]].inputs if i in left)
            if nxt in path:
                cycle = path[path.index(nxt):] + [nxt]
                break
            path.append(nxt)
        cycle.reverse()  # upstream -> downstream
        raise ValueError(f"the stages form a cycle: {' -> '.join(cycle)}; a stage's inputs "
                         "must come from upstream (feedback to the next frame is not an input)")
    return order


# --------------------------------------------------------------------------------------------
# prediction


@dataclass(frozen=True)
class Prediction:
    """What :func:`predict` returns; times in s, delays in frames.

    Attributes
    ----------
    period_s, exposure_s : float
        Frame period and WFS integration time used, in s.
    stage_p50_s, stage_p99_s : dict of str to float
        Per stage: latency (end of its last packet minus the frame start) percentiles, in s.
    end_to_end_p50_s, end_to_end_p99_s : float
        End-to-end latency (frame start to the last sink's end) percentiles, in s.
    latency_frames_p50, latency_frames_p99 : float
        End-to-end latency over the period (the RTC's own delay, in frames).
    loop_delay_frames_p50, loop_delay_frames_p99 : float
        AOT loop delay in frames (see :func:`predict`).
    bottleneck : str
        The stage that, 10 % faster, lowers the end-to-end p50 most.
    gain_s : dict of str to float
        Per stage: how much the end-to-end p50 drops, in s, when that stage is 10 % faster.
    timeline : Timeline
        The simulation the percentiles come from.
    """

    period_s: float
    exposure_s: float
    stage_p50_s: dict[str, float]
    stage_p99_s: dict[str, float]
    end_to_end_p50_s: float
    end_to_end_p99_s: float
    latency_frames_p50: float
    latency_frames_p99: float
    loop_delay_frames_p50: float
    loop_delay_frames_p99: float
    bottleneck: str
    gain_s: dict[str, float] = field(repr=False)
    timeline: Timeline = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        """A flat dict: ``{stage}_p50_s``..., ``end_to_end_p50_s``..., delays, bottleneck."""
        out: dict[str, Any] = {"period_s": self.period_s, "exposure_s": self.exposure_s}
        for s in self.stage_p50_s:
            out[f"{s}_p50_s"] = self.stage_p50_s[s]
            out[f"{s}_p99_s"] = self.stage_p99_s[s]
        out.update(end_to_end_p50_s=self.end_to_end_p50_s,
                   end_to_end_p99_s=self.end_to_end_p99_s,
                   latency_frames_p50=self.latency_frames_p50,
                   latency_frames_p99=self.latency_frames_p99,
                   loop_delay_frames_p50=self.loop_delay_frames_p50,
                   loop_delay_frames_p99=self.loop_delay_frames_p99,
                   bottleneck=self.bottleneck)
        return out


def predict(pipeline: Pipeline, frames: int = 2000, rng: None | int | np.random.Generator = 0,
            exposure_s: float | None = None, speedup: float = 0.10,
            skip: int = 0) -> Prediction:
    """Latency percentiles, AOT loop delay and bottleneck of a pipeline, by simulation.

    The AOT (Adaptive Optics Telemetry standard) loop ``delay`` is "measured from the
    mid-point of the integration to the mid-point of the command applied", in frames. Here the
    integration of frame ``k`` ends at the frame's start (its readout starts then) and lasts
    ``exposure_s``; the command is applied when the last sink ends (its end-to-end latency L)
    and held for one period (zero-order hold). So::

        loop_delay_frames = (exposure_s / 2 + L + period_s / 2) / period_s

    i.e. ``1 + L / period_s`` with the default ``exposure_s = period_s``: a pipeline that
    computes in exactly one frame has the classic two-frame delay. The DM's own response is not
    included unless a stage models it.

    Parameters
    ----------
    pipeline : Pipeline
    frames : int
        Frames simulated.
    rng : None, int or numpy.random.Generator
        Seed; the same seed is reused for every re-simulation (common random numbers).
    exposure_s : float or None
        WFS integration time in s; None: the frame period.
    speedup : float
        Fractional cost reduction tried per stage for the bottleneck (0.10: 10 % faster, cost
        and per-packet overhead both).
    skip : int
        Leading frames left out of the percentiles (warm-up).

    Returns
    -------
    Prediction
    """
    if not 0 < speedup < 1:
        raise ValueError(f"speedup is a fraction in (0, 1), got {speedup!r}")
    if pipeline.period_s is None and frames < 2:
        raise ValueError("a free-running pipeline (period_s=None) needs frames >= 2 to measure "
                         "its period")
    seed = rng
    if isinstance(rng, np.random.Generator):
        seed = int(rng.integers(2**63))
    timeline = pipeline.simulate(frames, seed)
    period = timeline.period_s
    exposure = period if exposure_s is None else _nonneg("exposure_s", exposure_s)
    summ = timeline.summary(skip)
    p50, p99 = summ[f"{END_TO_END}_p50_s"], summ[f"{END_TO_END}_p99_s"]
    gain: dict[str, float] = {}
    for s in pipeline.stages:
        faster = pipeline.replace(s.scaled(1.0 - speedup)).simulate(frames, seed)
        gain[s.name] = p50 - percentiles(faster.end_to_end_s()[skip:], (50,))[0]
    bottleneck = max(gain, key=gain.__getitem__)  # first in topological order on ties

    def delay(latency: float) -> float:
        return (exposure / 2 + latency + period / 2) / period

    return Prediction(
        period_s=period, exposure_s=exposure,
        stage_p50_s={s: summ[f"{s}_p50_s"] for s in timeline.stages},
        stage_p99_s={s: summ[f"{s}_p99_s"] for s in timeline.stages},
        end_to_end_p50_s=p50, end_to_end_p99_s=p99,
        latency_frames_p50=p50 / period, latency_frames_p99=p99 / period,
        loop_delay_frames_p50=delay(p50), loop_delay_frames_p99=delay(p99),
        bottleneck=bottleneck, gain_s=gain, timeline=timeline)
