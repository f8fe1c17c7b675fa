"""Other hardware, from published figures (NOT measured here), for the latency model.

Two kinds of entries, each with its source:

- :data:`MACHINES`: server and workstation CPUs (:class:`MachineSpec`: cores, theoretical
  peak memory bandwidth from the vendor's channel count and DDR rate). A profile of one is
  made with :func:`derive` from a profile measured here: the kernel costs are this machine's,
  scaled by a stated factor (by default the memory-bandwidth ratio, as for memory-bound
  kernels), the hops copied unchanged (a wake-up costs what the OS and the CPU's idle states
  make it, not what the memory bandwidth does). Both are assumptions the entry's ``source``
  spells out;
- :data:`LINKS`: interconnects (:class:`Link`), their payload rate in BYTES per second with
  the conversion from the signalling rate written out.

:data:`CATALOGUE` holds both, by name.

Caveats of the scaling. A peak figure is ``channels x transfers/s x 8 bytes``; a copy
(STREAM-like) reaches a fraction of it, so :func:`derive` scales by
``measured copy bandwidth / (peak x COPY_EFFICIENCY)``, ``COPY_EFFICIENCY`` an assumed 0.7.
The loop's per-frame working sets at 10x10 to 40x40 (a 400 KB image, a 13.6 MB control
matrix at 40x40) fit in the caches of these CPUs, where the memory bandwidth does not bound
the cost: the scaled costs are a first guess, not a prediction. The socket's bandwidth is
shared by its cores; a single-threaded kernel sees a fraction of it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dao.latency.profile import HardwareProfile, KernelTable

__all__ = ["MachineSpec", "Link", "MACHINES", "LINKS", "CATALOGUE", "COPY_EFFICIENCY",
           "derive", "ddr_peak_bytes_per_s", "pcie_bytes_per_s", "ethernet_bytes_per_s"]

#: The assumed fraction of a theoretical peak memory bandwidth that a large copy reaches.
COPY_EFFICIENCY = 0.7


def ddr_peak_bytes_per_s(channels: int, mega_transfers_per_s: float) -> float:
    """Theoretical peak of ``channels`` 64-bit DDR channels: ``channels x MT/s x 1e6 x 8``
    bytes per second (e.g. 12 x 4800 MT/s -> 460.8e9 B/s)."""
    return channels * mega_transfers_per_s * 1e6 * 8


def pcie_bytes_per_s(gen: int, lanes: int = 16) -> float:
    """Payload rate of a PCIe link, one direction, bytes per second.

    Gen 3 and 4 signal at 8 and 16 GT/s per lane with 128b/130b encoding:
    ``GT/s x 128/130 / 8`` bytes per lane (gen 3 x16: 15.75e9 B/s; gen 4 x16: 31.5e9 B/s),
    before packet (TLP) overheads.
    """
    rates = {3: 8e9, 4: 16e9, 5: 32e9}
    if gen not in rates:
        raise ValueError(f"PCIe gen {gen}: 3, 4 or 5")
    return rates[gen] * 128 / 130 / 8 * lanes


def ethernet_bytes_per_s(gigabits_per_s: float) -> float:
    """An Ethernet link's data rate in bytes per second: ``Gb/s x 1e9 / 8`` (10 GbE:
    1.25e9 B/s). Frame, IP and TCP headers take about 5 % more of it at a 1500-byte MTU."""
    return gigabits_per_s * 1e9 / 8


@dataclass(frozen=True)
class MachineSpec:
    """A CPU class from its vendor's specifications (not measured).

    Attributes
    ----------
    name : str
    cores : int
        Cores of one socket.
    memory_bandwidth_bytes_per_s : float
        Theoretical peak of one socket (:func:`ddr_peak_bytes_per_s`), bytes per second.
    source : str
        Where the figures come from, and how the peak is computed.
    """

    name: str
    cores: int
    memory_bandwidth_bytes_per_s: float
    source: str


@dataclass(frozen=True)
class Link:
    """An interconnect (not measured).

    Attributes
    ----------
    name : str
    bandwidth_bytes_per_s : float
        Payload rate, one direction, bytes per second.
    source : str
        The standard, and the bits -> bytes conversion.
    """

    name: str
    bandwidth_bytes_per_s: float
    source: str

    def transfer_s(self, nbytes: int) -> float:
        """Seconds to move ``nbytes`` at :attr:`bandwidth_bytes_per_s` (no latency added)."""
        return float(nbytes) / self.bandwidth_bytes_per_s


MACHINES: dict[str, MachineSpec] = {
    "amd-epyc-9654": MachineSpec(
        "AMD EPYC 9654 (Genoa, Zen 4), one socket", 96, ddr_peak_bytes_per_s(12, 4800),
        "AMD EPYC 9654 product specifications (amd.com): 96 cores, 12 channels of "
        "DDR5-4800, per-socket memory bandwidth 460.8 GB/s = 12 x 4800e6 x 8 B/s"),
    "intel-xeon-8480plus": MachineSpec(
        "Intel Xeon Platinum 8480+ (Sapphire Rapids), one socket", 56,
        ddr_peak_bytes_per_s(8, 4800),
        "Intel ARK, Xeon Platinum 8480+: 56 cores, 8 memory channels, DDR5-4800; peak "
        "computed here as 8 x 4800e6 x 8 B/s = 307.2 GB/s"),
    "amd-ryzen-9-7950x": MachineSpec(
        "AMD Ryzen 9 7950X (Zen 4 desktop)", 16, ddr_peak_bytes_per_s(2, 5200),
        "AMD Ryzen 9 7950X product specifications (amd.com): 16 cores, 2 channels, "
        "DDR5-5200 (2x1R); peak computed here as 2 x 5200e6 x 8 B/s = 83.2 GB/s"),
}

LINKS: dict[str, Link] = {
    "10gbe": Link("10 Gigabit Ethernet", ethernet_bytes_per_s(10),
                  "IEEE 802.3ae: 10 Gb/s; 10e9 / 8 = 1.25e9 B/s (line rate, before headers)"),
    "25gbe": Link("25 Gigabit Ethernet", ethernet_bytes_per_s(25),
                  "IEEE 802.3by: 25 Gb/s; 25e9 / 8 = 3.125e9 B/s (line rate, before headers)"),
    "100gbe": Link("100 Gigabit Ethernet", ethernet_bytes_per_s(100),
                   "IEEE 802.3ba: 100 Gb/s; 100e9 / 8 = 12.5e9 B/s (line rate, before "
                   "headers)"),
    "pcie3-x16": Link("PCIe 3.0 x16, one direction", pcie_bytes_per_s(3, 16),
                      "PCI-SIG PCIe 3.0: 8 GT/s per lane, 128b/130b; 8e9 x 128/130 / 8 x 16 "
                      "= 15.75e9 B/s per direction"),
    "pcie4-x16": Link("PCIe 4.0 x16, one direction", pcie_bytes_per_s(4, 16),
                      "PCI-SIG PCIe 4.0: 16 GT/s per lane, 128b/130b; 16e9 x 128/130 / 8 x 16 "
                      "= 31.5e9 B/s per direction"),
}

#: Every entry by name: a :class:`MachineSpec` or a :class:`Link`. None is measured.
CATALOGUE: dict[str, MachineSpec | Link] = {**MACHINES, **LINKS}


def derive(spec: MachineSpec | str, base: HardwareProfile,
           factor: float | None = None) -> HardwareProfile:
    """A profile of the catalogue machine ``spec`` from the profile ``base`` measured here.

    Parameters
    ----------
    spec : MachineSpec or str
        The machine, or its :data:`MACHINES` key.
    base : HardwareProfile
        A measured profile (its kernel costs and hops are used).
    factor : float, optional
        The cost scale (a cost there = ``factor`` x the cost here). Default: the
        memory-bandwidth ratio ``base.memory_bandwidth_bytes_per_s / (spec peak x
        COPY_EFFICIENCY)``, the scaling of a memory-bound kernel.

    Returns
    -------
    HardwareProfile
        ``measured`` False; ``source`` names the vendor figures, the base profile and the
        factor; the hops (``hop_*`` and the ``hop.loop.*`` tables) are ``base``'s, unscaled.
    """
    if isinstance(spec, str):
        if spec not in MACHINES:
            raise KeyError(f"no machine {spec!r} in the catalogue: {', '.join(MACHINES)}")
        spec = MACHINES[spec]
    expected_copy = spec.memory_bandwidth_bytes_per_s * COPY_EFFICIENCY
    how = "given"
    if factor is None:
        factor = base.memory_bandwidth_bytes_per_s / expected_copy
        how = (f"memory-bandwidth ratio {base.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s "
               f"measured / ({spec.memory_bandwidth_bytes_per_s / 1e9:.1f} GB/s peak x "
               f"{COPY_EFFICIENCY} assumed copy efficiency)")
    kernels = {k: t if k.startswith("hop.") else KernelTable(
        t.name, t.size_unit, t.call, [replace(p, cost=p.cost.scaled(factor)) for p in t.points])
               for k, t in base.kernels.items()}
    notes: dict[str, Any] = {**base.notes, "derived_from": base.source,
                             "kernel_scale": f"{factor:.4g} ({how})"}
    return HardwareProfile(
        name=spec.name,
        source=(f"NOT MEASURED: {spec.source}. Kernel costs: those {base.source}, times "
                f"{factor:.3g} ({how}); hops copied unscaled from that profile"),
        cores=spec.cores, memory_bandwidth_bytes_per_s=expected_copy,
        hop_stream_s=base.hop_stream_s, hop_zmq_s=base.hop_zmq_s,
        hop_frame_bytes=base.hop_frame_bytes, kernels=kernels, loops=dict(base.loops),
        measured=False,
        notes={k: str(v) for k, v in notes.items()})
