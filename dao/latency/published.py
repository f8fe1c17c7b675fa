"""Published AO real-time controllers, modelled with their own hardware (issue 14).

Each :class:`PublishedCase` holds a published latency, what exactly it measures, the inputs the
publication gives (WFS pixels, subapertures, actuators, frame rate, hardware) and the inputs it
does not give, assumed here and listed as such in ``assumptions``. :meth:`PublishedCase.pipeline`
builds the :class:`~dao.latency.model.Pipeline` of the model from those inputs:

``readout``
    the camera's pixels streamed over the published link, cut into packets (one per row of
    subapertures), ``transfer_s(pixel bytes, link bytes/s)``;
``pixels``
    calibration (dark, flat) and centroiding of a packet, a roofline cost from its flops and
    bytes at the published hardware's rates times an assumed efficiency;
``mvm``
    the reconstruction of a packet's slopes (horizontal processing: each packet's slopes
    multiply their columns of the control matrix as they arrive), a roofline cost that the
    matrix's bytes bound (memory-bound);
``dm_send``
    the actuator commands sent once every packet is reconstructed.

``pixels`` and ``mvm`` share one server (the processor's memory system), so they contend.
:func:`compare` returns the model's figure of the SAME quantity as the published one: every
case here publishes DARC's latency, from the last pixel received to the DM command sent, so
the model's figure is the end-to-end latency minus the readout's (the last pixel's arrival).

Units: seconds, bytes, bytes per second; link rates in bits per second go through
:func:`~dao.latency.model.gbit_per_s`. Published figures are quoted as found; each case names
its source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dao.latency.model import (
    Pipeline,
    Prediction,
    Resource,
    Stage,
    gbit_per_s,
    gbyte_per_s,
    predict,
    roofline_s,
    transfer_s,
)

__all__ = ["Citation", "PublishedCase", "CASES", "compare", "model_latency_s",
           "sfpdp_bytes_per_s"]

#: What every case's published figure measures (DARC's definition of its latency).
LAST_PIXEL_TO_DM = ("DARC's RTCP latency: from the last pixel of a frame received by the RTC "
                    "to the DM command sent (pixel readout and DM response excluded)")


def sfpdp_bytes_per_s(gbaud: float = 2.5) -> float:
    """Payload rate of a serial FPDP link in bytes/s: ``gbaud`` x 8/10 (8b/10b line code), in
    Gbit/s, converted to bytes (2.5 Gbaud: 2.0 Gbit/s = 250e6 B/s)."""
    return gbit_per_s(gbaud * 8 / 10)


@dataclass(frozen=True)
class Citation:
    """Where a published figure comes from."""

    authors: str
    title: str
    venue: str
    year: int
    url: str = ""

    def __str__(self) -> str:
        s = f"{self.authors} ({self.year}), {self.title}, {self.venue}"
        return f"{s}, {self.url}" if self.url else s


@dataclass(frozen=True)
class PublishedCase:
    """One published AO RTC latency and the inputs to model it.

    Attributes
    ----------
    name, system : str
        Short key; the AO system, RTC and hardware in words.
    citation : Citation
    measures : str
        What the published number measures, exactly.
    published_s : float
        The published value, s (``published_kind`` says whether a mean, a median, a bound).
    published_kind : str
    wfs_pixels : int
        Pixels read per frame, all WFSs together.
    bytes_per_pixel : int
        Bytes per pixel on the link (16-bit pixels: 2).
    subapertures : int
        Valid subapertures (SH) or pupil pixels (pyramid), all WFSs; slopes = 2 x this.
    subaperture_rows : int
        Rows of subapertures across a WFS: the packets the readout is cut into.
    actuators : int
        Actuators commanded (reconstructor rows).
    frame_rate_hz : float
    link_bytes_per_s : float
        Pixel stream rate into the RTC, bytes/s (several WFS links in parallel summed).
    flops_per_s, memory_bytes_per_s : float
        The RTC hardware's peak compute (single-precision flop/s) and memory bandwidth (B/s).
    compute_efficiency, memory_efficiency : float
        Assumed fractions of those peaks that the pixel and MVM kernels sustain.
    dm_link_bytes_per_s : float
        Rate of the link the DM commands leave on, bytes/s (2 bytes per actuator).
    tolerance : tuple of float
        ``(low, high)``: the model / published ratio the tests accept, with ``why``.
    why : str
        Why that tolerance: what the model leaves out for this case.
    inputs_source : str
        Which inputs are published (and where).
    assumptions : tuple of str
        Every input NOT from the publication.
    """

    name: str
    system: str
    citation: Citation
    measures: str
    published_s: float
    published_kind: str
    wfs_pixels: int
    bytes_per_pixel: int
    subapertures: int
    subaperture_rows: int
    actuators: int
    frame_rate_hz: float
    link_bytes_per_s: float
    flops_per_s: float
    memory_bytes_per_s: float
    compute_efficiency: float
    memory_efficiency: float
    dm_link_bytes_per_s: float
    tolerance: tuple[float, float]
    why: str
    inputs_source: str
    assumptions: tuple[str, ...] = field(default=())

    # per pixel: dark subtraction, flat multiplication, threshold, and the centre of gravity's
    # three multiply-adds (sum, x-weighted, y-weighted): 8 flop; bytes moved: the raw pixel,
    # a float32 dark and a float32 flat read (the calibrated pixel stays in cache).
    CALIB_FLOP_PER_PIXEL = 8
    CALIB_TABLE_BYTES_PER_PIXEL = 8

    def stage_costs_s(self) -> dict[str, float]:
        """Whole-frame cost of each stage, s (the model cuts them into packets)."""
        slopes = 2 * self.subapertures
        pixel_bytes = self.wfs_pixels * self.bytes_per_pixel
        flops = self.flops_per_s * self.compute_efficiency
        mem = self.memory_bytes_per_s * self.memory_efficiency
        pixels = roofline_s(self.CALIB_FLOP_PER_PIXEL * self.wfs_pixels,
                            pixel_bytes + self.CALIB_TABLE_BYTES_PER_PIXEL * self.wfs_pixels,
                            flops, mem)
        # float32 control matrix, read once per frame; 2 flop per element (multiply-add)
        matrix_bytes = 4 * slopes * self.actuators
        mvm = roofline_s(2 * slopes * self.actuators,
                         matrix_bytes + 4 * (slopes + self.actuators), flops, mem)
        return {
            "readout": transfer_s(pixel_bytes, self.link_bytes_per_s),
            "pixels": pixels,
            "mvm": mvm,
            "dm_send": transfer_s(2 * self.actuators, self.dm_link_bytes_per_s),
        }

    def pipeline(self) -> Pipeline:
        """The model's pipeline of this case (see the module docstring)."""
        c = self.stage_costs_s()
        p = self.subaperture_rows
        return Pipeline([
            Stage("readout", c["readout"], packets=p),
            Stage("pixels", c["pixels"], inputs=["readout"], resource="rtc", packets=p),
            Stage("mvm", c["mvm"], inputs=["pixels"], resource="rtc", packets=p),
            Stage("dm_send", c["dm_send"], inputs=["mvm"]),
        ], [Resource("rtc", 1)], period_s=1.0 / self.frame_rate_hz)

    def predict(self, frames: int = 200) -> Prediction:
        """The model's prediction of :meth:`pipeline` (constant costs: 200 frames suffice)."""
        return predict(self.pipeline(), frames=frames)

    def model_s(self, frames: int = 200) -> float:
        """The model's figure of the published quantity (:func:`model_latency_s`), s."""
        return model_latency_s(self.predict(frames))


def model_latency_s(pred: Prediction) -> float:
    """Last pixel received to DM command sent, s: the end-to-end p50 minus the readout's."""
    return pred.end_to_end_p50_s - pred.stage_p50_s["readout"]


_JENKINS_THESIS = Citation(
    "D. R. Jenkins", "A Prototype Adaptive Optics Real-Time Control Architecture for Extremely "
    "Large Telescopes using Many-Core CPUs", "Doctoral thesis, Durham University (ch. 4.5, "
    "figs 4.7 and 4.8)", 2019, "http://etheses.dur.ac.uk/13237")

# Intel Xeon Phi 7250 (Knights Landing): 68 cores at 1.4 GHz, two AVX-512 FMA units per core:
# 68 x 1.4e9 x 2 units x 16 float32 lanes x 2 flop = 6.09e12 flop/s single precision (Intel
# ARK figures; the flop count is computed here). MCDRAM: ">450 GB/s" (the thesis's abstract).
_KNL_FLOPS = 68 * 1.4e9 * 2 * 16 * 2
_KNL_MEM = gbyte_per_s(450)
_KNL_ASSUMED = (
    "pixel stream: 40 Gbit/s UDP Ethernet (the thesis streams UDP packets from a CPU camera "
    "simulator; its link rate is not in the excerpt found; 10 or 40 Gbit/s UDP is the pixel "
    "link Durham proposed for ELT-era RTCs, Dipper et al., AO4ELT2 2011)",
    "memory efficiency 0.85 of the 450 GB/s MCDRAM figure for the streamed MVM; compute "
    "efficiency 0.10 of peak for calibration and centroiding (branchy, short loops)",
    "16-bit pixels; float32 control matrix read once per frame",
    "DM commands: 16-bit values over 10 Gbit/s Ethernet",
)

CASES: dict[str, PublishedCase] = {
    "canary_darc": PublishedCase(
        name="canary_darc",
        system="CANARY (MOAO demonstrator, 4.2 m WHT) phase A on DARC: 3 Shack-Hartmann WFSs, "
               "52-actuator DM, a multi-core Xeon server",
        citation=Citation(
            "A. G. Basden, D. Geng, R. M. Myers, E. J. Younger",
            "Durham adaptive optics real-time controller", "Applied Optics 49(32), 6354",
            2010, "https://arxiv.org/abs/1010.3209"),
        measures=LAST_PIXEL_TO_DM, published_s=245e-6,
        published_kind="about 245 us mean (RMS jitter 11 us)",
        wfs_pixels=3 * 128 * 128, bytes_per_pixel=2, subapertures=3 * 36, subaperture_rows=7,
        actuators=52, frame_rate_hz=150.0, link_bytes_per_s=3 * sfpdp_bytes_per_s(2.5),
        flops_per_s=8 * 2.5e9 * 8, memory_bytes_per_s=2 * 25.6e9,
        compute_efficiency=0.10, memory_efficiency=0.5,
        dm_link_bytes_per_s=133e6,
        tolerance=(0.0, 1.0),
        why="the model is a LOWER bound here: the work per frame is a few microseconds at "
            "any 2010 CPU's rates, and the 245 us published are DARC's thread "
            "synchronisation, its frame bookkeeping and the DM card's write, which a roofline "
            "of flops and bytes does not contain; the case shows the model's blind spot",
        inputs_source="3 WFSs and a 52-actuator DM, ~245 us latency, 11 us RMS jitter: "
                      "Basden et al. 2010; 2.5 Gbit sFPDP fibre pixel links: Dipper et al., "
                      "'AO real-time control systems for the ELT', AO4ELT2 (2011)",
        assumptions=(
            "each WFS 7x7 subapertures (36 valid) on 128x128 16-bit pixels",
            "sFPDP at 2.5 Gbaud with 8b/10b coding: 250e6 B/s payload per WFS link, the "
            "three links in parallel",
            "RTC: 2 sockets x 4 cores, 2.5 GHz, 8 float32 flop/cycle (SSE), 3 DDR3-1066 "
            "channels per socket (2 x 25.6 GB/s peak); efficiencies 0.10 (compute), 0.5 "
            "(memory)",
            "DM commands: 16-bit values over 32-bit/33 MHz PCI (133e6 B/s)",
            "frame rate 150 Hz (the latency after the last pixel does not depend on it "
            "while the RTC keeps up)",
        )),
    "elt_scao_sh_knl": PublishedCase(
        name="elt_scao_sh_knl",
        system="ELT-scale SCAO, 80x80 Shack-Hartmann (4616 valid subapertures), M4+M5 "
               "5318 actuators, DARC on one Intel Xeon Phi 7250 (KNL), 500 Hz",
        citation=_JENKINS_THESIS, measures=LAST_PIXEL_TO_DM, published_s=511e-6,
        published_kind="mean 511 +/- 15 us over 1.5e5 frames",
        wfs_pixels=800 * 800, bytes_per_pixel=2, subapertures=4616, subaperture_rows=80,
        actuators=5318, frame_rate_hz=500.0, link_bytes_per_s=gbit_per_s(40),
        flops_per_s=_KNL_FLOPS, memory_bytes_per_s=_KNL_MEM,
        compute_efficiency=0.10, memory_efficiency=0.85,
        dm_link_bytes_per_s=gbit_per_s(10),
        tolerance=(0.5, 2.0),
        why="the MVM (5318 x 9232 float32, 196 MB a frame) is memory-bound and dominates; "
            "the published hardware's bandwidth sets it, but the pixel link rate is assumed "
            "and sets how much of the MVM overlaps the readout: within 2x either way",
        inputs_source="80x80 SH, 4616 valid subapertures, 5318 actuators, a 5318 x 9232 MVM, "
                      "500 Hz, UDP pixel streaming, Xeon Phi 7250, mean 511 +/- 15 us: "
                      "Jenkins 2019 (thesis sec. 4.5); MCDRAM >450 GB/s: its abstract",
        assumptions=("10x10 pixels per subaperture: 800x800 pixels",) + _KNL_ASSUMED),
    "elt_scao_pyramid_knl": PublishedCase(
        name="elt_scao_pyramid_knl",
        system="ELT-scale SCAO, pyramid WFS with 100x100 pixels per quadrant, 5318 "
               "actuators, DARC on one Intel Xeon Phi 7250 (KNL), 500 Hz",
        citation=_JENKINS_THESIS, measures=LAST_PIXEL_TO_DM, published_s=998e-6,
        published_kind="mean 998 +/- 10 us over 1.5e5 frames",
        wfs_pixels=4 * 100 * 100, bytes_per_pixel=2, subapertures=7854, subaperture_rows=100,
        actuators=5318, frame_rate_hz=500.0, link_bytes_per_s=gbit_per_s(40),
        flops_per_s=_KNL_FLOPS, memory_bytes_per_s=_KNL_MEM,
        compute_efficiency=0.10, memory_efficiency=0.85,
        dm_link_bytes_per_s=gbit_per_s(10),
        tolerance=(0.5, 2.0),
        why="the MVM (5318 x 15708 float32, 334 MB a frame) is memory-bound and far longer "
            "than the readout, so the assumed link barely matters: within 2x either way",
        inputs_source="pyramid with 100 pixels across each quadrant, 5318 actuators, 500 Hz, "
                      "Xeon Phi 7250, mean 998 +/- 10 us: Jenkins 2019 (thesis sec. 4.5, "
                      "fig. 4.8)",
        assumptions=("valid pupil pixels: the disc inscribed in a 100x100 quadrant, "
                     "pi x 50^2 = 7854, each giving 2 slopes",) + _KNL_ASSUMED),
}


def compare(frames: int = 200) -> list[dict[str, Any]]:
    """Each case's published figure beside the model's figure of the same quantity.

    Returns
    -------
    list of dict
        Per case: ``name``, ``system``, ``measures``, ``published_s``, ``published_kind``,
        ``model_s``, ``ratio`` (model / published), ``bottleneck``, ``stage_costs_s``,
        ``source`` (the citation) and ``assumptions``.
    """
    rows = []
    for case in CASES.values():
        pred = case.predict(frames)
        model = model_latency_s(pred)
        rows.append({
            "name": case.name, "system": case.system, "measures": case.measures,
            "published_s": case.published_s, "published_kind": case.published_kind,
            "model_s": model, "ratio": model / case.published_s,
            "bottleneck": pred.bottleneck, "stage_costs_s": case.stage_costs_s(),
            "source": str(case.citation), "assumptions": list(case.assumptions),
        })
    return rows


def _fmt(rows: list[Mapping[str, Any]]) -> str:
    lines = []
    for r in rows:
        lines.append(f"{r['name']:24s} published {r['published_s'] * 1e6:7.1f} us  model "
                     f"{r['model_s'] * 1e6:7.1f} us  ratio {r['ratio']:.3g}  "
                     f"({r['bottleneck']})")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(_fmt(compare()))
