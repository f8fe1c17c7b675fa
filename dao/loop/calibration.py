"""Calibration of the loop on a simulated bench: interaction and control matrices, modal basis.

:func:`calibrate` measures a :class:`Calibration` on the bench the configuration describes;
:meth:`Calibration.save` writes it to a ``.npz`` file and :meth:`Calibration.load` reads it
back, so that a loop restarts (or another loop starts) without recalibrating
(``[calibration] file`` in the loop's configuration; :meth:`dao.loop.AOLoop.save_calibration`).
"""

from __future__ import annotations

import json
import os
import time
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from dao.loop.config import bench_arguments

__all__ = ["Calibration", "CalibrationMismatch", "calibrate", "modal_basis"]

#: Format version written by :meth:`Calibration.save`.
FORMAT = 1

#: The configuration entries a calibration depends on: a saved calibration is refused for a
#: loop whose configuration differs in one of them.
GEOMETRY_KEYS = (
    ("bench", "n_subap"), ("bench", "diameter"), ("bench", "pupil_pixels_per_subaperture"),
    ("bench", "pixels_per_subaperture"), ("bench", "sampling"), ("bench", "coupling"),
    ("bench", "wavelength_wfs"), ("bench", "modulation"), ("bench", "n_modulation"),
    ("bench", "padding"), ("sensor", "type"), ("sensor", "method"), ("sensor", "mode"),
    ("sensor", "modulation"), ("sensor", "n_modulation"), ("sensor", "padding"),
    ("calibration", "drop_modes"), ("controller", "basis"), ("science", "wavelength"),
)


class CalibrationMismatch(ValueError):
    """A saved calibration does not belong to the loop's configuration (or is not one)."""


class Calibration(Mapping):
    """What a loop is calibrated with: matrices, modal basis, reference slopes, geometry.

    A read-only mapping (``cal["control_matrix"]``) whose main entries are also attributes.
    Made by :func:`calibrate`; :meth:`save` and :meth:`load` keep it in a ``.npz`` file.

    Attributes
    ----------
    interaction_matrix : ndarray, float32, shape (n_slopes, n_actuators)
        Slopes per metre of OPD on each actuator (push-pull, noise-free).
    control_matrix : ndarray, float32, shape (n_actuators, n_slopes)
        Truncated-SVD inverse of the interaction matrix: metres of OPD per slope unit.
    modes : ndarray, float32, shape (n_actuators, n_modes)
        The modal basis as commands (orthonormal columns): ``command = modes @ coefficients``.
    slopes_to_modes : ndarray, float32, shape (n_modes, n_slopes)
        Modal reconstructor: ``modes @ slopes_to_modes == control_matrix``.
    reference_slopes : ndarray, float32, shape (n_slopes,)
        Slopes of a flat wavefront (mirror flat, no turbulence), subtracted from each frame's.
    n_modes : int
        Controlled modes (``n_actuators - calibration.drop_modes``).
    """

    def __init__(self, entries: Mapping[str, Any]) -> None:
        self._d = dict(entries)

    # -- mapping ---------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        d = self._d
        return (f"<Calibration {d.get('sensor')}: {d.get('n_slopes')} slopes, "
                f"{d.get('n_actuators')} actuators, {d.get('n_modes')} {d.get('basis')} modes>")

    @property
    def interaction_matrix(self) -> np.ndarray:
        return self._d["interaction_matrix"]

    @property
    def control_matrix(self) -> np.ndarray:
        return self._d["control_matrix"]

    @property
    def modes(self) -> np.ndarray:
        return self._d["modes"]

    @property
    def slopes_to_modes(self) -> np.ndarray:
        return self._d["slopes_to_modes"]

    @property
    def reference_slopes(self) -> np.ndarray:
        return self._d["reference_slopes"]

    @property
    def n_modes(self) -> int:
        return int(self._d["n_modes"])

    @property
    def n_actuators(self) -> int:
        return int(self._d["n_actuators"])

    @property
    def n_slopes(self) -> int:
        return int(self._d["n_slopes"])

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> str:
        """Write the calibration to ``path`` (``.npz``, mode 0600); return the path.

        Arrays are stored as they are; everything else (shapes, the error budget, the
        configuration entries it depends on) as JSON.
        """
        arrays = {k: v for k, v in self._d.items() if isinstance(v, np.ndarray)}
        other = {k: v for k, v in self._d.items() if not isinstance(v, np.ndarray)}
        meta = json.dumps({"format": FORMAT, **other}, default=_json_default)
        path = os.fspath(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, dao_calibration=np.array(meta), **arrays)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, config: dict[str, Any] | None = None) -> Calibration:
        """Read a calibration written by :meth:`save`.

        Parameters
        ----------
        path : str or os.PathLike
            The ``.npz`` file.
        config : dict, optional
            A loop configuration the calibration must belong to (see :meth:`check`).

        Raises
        ------
        FileNotFoundError
            No such file.
        CalibrationMismatch
            Not a calibration saved by dao (a foreign or truncated file), or made for a
            configuration that differs from ``config`` (each differing key named).
        """
        path = os.fspath(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                if "dao_calibration" not in f.files:
                    raise CalibrationMismatch(
                        f"{path} is not a dao calibration (no dao_calibration entry): save one "
                        "with AOLoop.save_calibration(path)")
                meta = json.loads(str(f["dao_calibration"]))
                arrays = {k: f[k] for k in f.files if k != "dao_calibration"}
        except FileNotFoundError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, CalibrationMismatch):
                raise
            raise CalibrationMismatch(f"{path} cannot be read as a dao calibration ({exc}): "
                                      "is it truncated? save it again") from exc
        if meta.pop("format", None) != FORMAT:
            raise CalibrationMismatch(f"{path} is a calibration of another format: recalibrate")
        for k in ("slopes_shape", "wfs_shape", "psf_shape", "subaperture_grid",
                  "actuator_grid"):
            if k in meta:
                meta[k] = tuple(meta[k])
        cal = cls({**meta, **arrays})
        if config is not None:
            cal.check(config, path)
        return cal

    def check(self, config: dict[str, Any], source: str = "the calibration") -> None:
        """Refuse a loop configuration this calibration was not made for.

        Raises
        ------
        CalibrationMismatch
            Naming each entry of :data:`GEOMETRY_KEYS` that differs.
        """
        made = self._d.get("config", {})
        diff = []
        for table, key in GEOMETRY_KEYS:
            want = config.get(table, {}).get(key)
            have = made.get(table, {}).get(key)
            if want != have and not (_number(want) and _number(have)
                                     and np.isclose(float(want), float(have))):
                diff.append(f"{table}.{key} = {want!r} in the loop's configuration, "
                            f"{have!r} in the calibration")
        if diff:
            raise CalibrationMismatch(
                f"{source} was made for another loop: " + "; ".join(diff)
                + ". Recalibrate (leave calibration.file empty) or use the configuration it was "
                "made with")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"cannot store {type(v).__name__} in a calibration")


def _geometry_config(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for table, key in GEOMETRY_KEYS:
        if key in cfg.get(table, {}):
            out.setdefault(table, {})[key] = cfg[table][key]
    return out


def modal_basis(interaction: np.ndarray, n_modes: int, basis: str = "kl", *,
                positions: np.ndarray | None = None, r0: float = 0.15,
                L0: float = 25.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # noqa: N803
    """The controlled modes and their reconstructor, from the interaction matrix.

    ``interaction = U S V^T``; the ``n_modes`` best-seen singular modes ``V_n`` span the
    controlled commands. ``basis="svd"`` keeps them, ordered by decreasing singular value;
    ``"kl"`` rotates them into Karhunen-Loeve modes of von Karman turbulence sampled at the
    actuators (the turbulence covariance between actuator positions, projected on ``V_n`` and
    diagonalised), ordered by decreasing turbulent variance, so mode 0 is the largest
    (tip/tilt-like) and the last the finest. Either way ``modes @ slopes_to_modes`` is the
    truncated-SVD control matrix, so a modal integrator with equal gains is the zonal one.

    Parameters
    ----------
    interaction : ndarray, shape (n_slopes, n_actuators)
        Slopes per unit command.
    n_modes : int
        Modes controlled.
    basis : {"kl", "svd"}
        Which rotation of the controlled space.
    positions : ndarray, shape (n_actuators, 2), optional
        Actuator ``(y, x)`` in metres (needed for ``"kl"``).
    r0, L0 : float
        Fried parameter and outer scale, metres (``"kl"``: the covariance's shape only).

    Returns
    -------
    modes : ndarray, float64, shape (n_actuators, n_modes)
        Orthonormal command vectors.
    slopes_to_modes : ndarray, float64, shape (n_modes, n_slopes)
        Modal coefficients of a slope vector.
    variances : ndarray, shape (n_modes,)
        ``"kl"``: each mode's relative turbulent variance (descending); ``"svd"``: the
        singular values.
    """
    from dao.recon import von_karman_covariance

    u, s, vt = np.linalg.svd(np.asarray(interaction, np.float64), full_matrices=False)
    n = int(n_modes)
    if not 1 <= n <= s.size:
        raise ValueError(f"n_modes = {n}: must be between 1 and {s.size}")
    v_n, s2m = vt[:n].T, (u[:, :n] / s[:n]).T
    if basis == "svd":
        return v_n, s2m, s[:n]
    if basis != "kl":
        raise ValueError(f"unknown modal basis {basis!r}: use kl or svd")
    if positions is None:
        raise ValueError("the kl basis needs the actuator positions")
    d = np.hypot(*(positions[:, None, :] - positions[None, :, :]).transpose(2, 0, 1))
    cov = von_karman_covariance(d, r0, L0)
    cov = cov - cov.mean(axis=0, keepdims=True)  # piston out
    cov = cov - cov.mean(axis=1, keepdims=True)
    lam, w = np.linalg.eigh(v_n.T @ cov @ v_n)
    order = np.argsort(lam)[::-1]
    lam, w = lam[order], w[:, order]
    w *= np.where(w[np.argmax(np.abs(w), axis=0), np.arange(n)] < 0, -1.0, 1.0)  # fix signs
    return v_n @ w, w.T @ s2m, np.maximum(lam, 0.0) / max(lam[0], 1e-300)


def calibrate(cfg: dict[str, Any], path: str | os.PathLike | None = None) -> Calibration:
    """Measure the loop's calibration on a simulated bench (and save it to ``path``).

    Interaction matrix by poking each actuator (push-pull, noise-free), control matrix by
    truncated SVD (``calibration.drop_modes`` smallest singular values dropped), the modal
    basis of ``controller.basis`` (:func:`modal_basis`) and the reference slopes of a flat
    wavefront.

    The slope vector is ordered as the estimators write it: the x slope of every subaperture,
    then the y slope of every subaperture (a pyramid in ``intensities`` mode: the four pupil
    images I1..I4 one after the other), i.e. a ``(n_axes, n_subapertures)`` array in C order
    (``slopes_shape``). Subapertures are in row-major order of the sensor's valid map, as
    the estimator's windows (``corners``) or pupil pixels (``indices``) are.

    Returns
    -------
    Calibration
        The attributes of :class:`Calibration`, and the entries ``n_actuators``,
        ``n_slopes``, ``slopes_shape``, ``wfs_shape``, ``psf_shape``, ``psf_sampling``
        (science camera pixels per ``lambda / D``), ``basis``, ``modal_variances``,
        ``condition_number``, ``budget`` (:meth:`dao.hw.SimulatedBench.error_budget` at the
        science wavelength), ``seconds`` (wall time), ``sensor``, ``stroke`` (metres); the
        slope estimator's geometry (``corners``, ``subaperture_size``, ``method`` for a
        Shack-Hartmann; ``indices``, ``reference``, ``mode`` for a pyramid: see
        :func:`dao.loop.components.slope_estimator`); ``subaperture_x``, ``subaperture_y``
        (each subaperture's column and row on the lenslet grid; a pyramid's: its valid
        pixel's in the pupil image), ``subaperture_grid``, ``actuator_x``, ``actuator_y``
        (each actuator's column and row on the mirror's grid, in command order),
        ``actuator_grid``, ``actuator_pitch`` (metres); ``config`` (the configuration entries
        it depends on, checked by :meth:`Calibration.check`).
    """
    from dao.loop.aoloop import kernel_threads
    from dao.recon._jit import numba_threads

    # the loop's components run their kernels on kernel_threads each: so does the
    # calibration (with every core's thread, its parallel kernels wait for workers)
    with numba_threads(kernel_threads(int(cfg.get("run", {}).get("kernel_threads", 0)))):
        return _measure(cfg, path)


def _measure(cfg: dict[str, Any], path: str | os.PathLike | None) -> Calibration:
    """:func:`calibrate`'s measurement."""
    from dao import recon
    from dao.hw import SimulatedBench

    t0 = time.perf_counter()
    bench = SimulatedBench(**bench_arguments(cfg))
    sc = cfg["sensor"]
    if bench.sensor == "pyramid":
        est = bench.slope_estimator(mode=str(sc.get("mode", "slopes")))
        geometry = {"indices": est.indices, "reference": est.reference, "mode": est.mode}
        # the pupil pixels in the order of the estimator's indices (row-major order of valid)
        sub_y, sub_x = np.nonzero(bench.wfs.valid)
    else:
        est = bench.slope_estimator(method=str(sc.get("method", "cog")))
        geometry = {"corners": est.corners, "subaperture_size": est.h,
                    "method": str(sc.get("method", "cog"))}
        # each window's top-left pixel over the window size: its place on the lenslet grid
        sub_y, sub_x = est.corners[:, 0] // est.h, est.corners[:, 1] // est.w
    act_y, act_x = np.nonzero(bench.mirror.valid)  # the command's order (flatnonzero)
    measure = bench.calibration_slopes(est)
    reference = measure(np.zeros(bench.n_actuators)).astype(np.float32)
    im = recon.measure_interaction_matrix(measure, bench.n_actuators,
                                          float(cfg["calibration"]["poke"]), pattern="identity",
                                          progress=False)
    n_modes = bench.n_actuators - int(cfg["calibration"].get("drop_modes", 2))
    cm = recon.control_matrix_svd(im, n_modes=n_modes)
    n_sub = sub_x.size
    if n_sub == 0 or im.shape[0] % n_sub or act_x.size != bench.n_actuators:
        raise RuntimeError(f"the bench's geometry does not match its measurements: "
                           f"{im.shape[0]} slopes for {n_sub} subapertures, "
                           f"{bench.n_actuators} actuators for {act_x.size} on the grid")
    pitch = float(bench.mirror.pitch)
    basis = str(cfg["controller"].get("basis", "kl"))
    modes, s2m, variances = modal_basis(
        im, cm.n_modes, basis, positions=np.stack([act_y, act_x], axis=1) * pitch,
        r0=float(cfg["bench"]["r0"]), L0=float(cfg["bench"]["L0"]))
    cal = Calibration({
        "sensor": bench.sensor, "n_actuators": bench.n_actuators, "n_slopes": im.shape[0],
        "interaction_matrix": im.astype(np.float32),
        "control_matrix": np.ascontiguousarray(cm.matrix, np.float32),
        "modes": np.ascontiguousarray(modes, np.float32),
        "slopes_to_modes": np.ascontiguousarray(s2m, np.float32),
        "modal_variances": variances, "basis": basis, "n_modes": cm.n_modes,
        "reference_slopes": reference, "stroke": float(bench.mirror.stroke[1]),
        **geometry,
        "subaperture_x": sub_x.astype(np.int64), "subaperture_y": sub_y.astype(np.int64),
        "actuator_x": act_x.astype(np.int64), "actuator_y": act_y.astype(np.int64),
        "slopes_shape": (im.shape[0] // n_sub, n_sub),
        "subaperture_grid": tuple(int(v) for v in bench.wfs.valid.shape),
        "actuator_grid": tuple(int(v) for v in bench.mirror.valid.shape),
        "actuator_pitch": pitch,
        "wfs_shape": tuple(int(v) for v in bench.wfs.shape),
        "psf_shape": tuple(int(v) for v in bench.science_camera.shape),
        "psf_sampling": float(bench.science_camera.pixels_per_lambda_over_d),
        "condition_number": float(cm.condition_number),
        "budget": bench.error_budget(1.0, float(cfg["science"]["wavelength"])),
        "config": _geometry_config(cfg),
        "seconds": time.perf_counter() - t0,
    })
    if path is not None:
        cal.save(path)
    return cal
