"""Pinhole for Python: CT volumes as NumPy arrays, DRRs, and the planners' typed reports.

NOT FOR CLINICAL USE. Pinhole is research and engineering software; every report says so.

The functions call the same Rust library as the ``pinhole`` command line
(``pinhole-pipeline``), with the GIL released, so a report from Python is the CLI's
JSON for the same inputs and threads run in parallel.

Coordinates are LPS millimetres (DICOM, ITK, 3D Slicer files). A :class:`Volume`'s
``array`` has shape ``(I, J, K)`` in Fortran order -- ``array[i, j, k]`` with ``i``
fastest, as stored in the file and as nibabel returns it -- and ``affine`` maps
``(i, j, k, 1)`` to LPS mm (``affine_ras`` to RAS mm, nibabel's convention).

>>> import pinhole
>>> ct = pinhole.load("ct.nii.gz")                       # doctest: +SKIP
>>> image = pinhole.drr(ct, lao=30, cran=10, size=256)   # doctest: +SKIP
>>> plan = pinhole.plan_needle("ct.nii.gz", "labels.nii.gz",
...                            procedure="kidney-biopsy", target="kidney_left")  # doctest: +SKIP
>>> plan.paths[0].length_mm                              # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import warnings as _warnings
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import NoFeasiblePathError, PinholeError, PinholeWarning

__all__ = [
    "DISCLAIMER",
    "Guidance",
    "NoFeasiblePathError",
    "LPS_TO_RAS",
    "PinholeError",
    "PinholeWarning",
    "Report",
    "Volume",
    "drr",
    "gpu_adapter",
    "guidance",
    "load",
    "measure_vessel",
    "plan_ablation",
    "plan_needle",
    "plan_vessel",
    "register",
]

__version__: str = _native.version()
#: The disclaimer every report carries.
DISCLAIMER: str = _native.disclaimer()
#: LPS <-> RAS (its own inverse): negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

PathLike = Union[str, "os.PathLike[str]"]
# Voxel types `drr` reads in place; others are converted to float32 first.
_DRR_DTYPES = tuple(np.dtype(t) for t in ("float32", "float64", "int16", "int32", "uint8", "uint16"))


class Volume:
    """A 3-D image on a voxel grid: ``array`` (``(I, J, K)``, ``array[i, j, k]``) and
    ``affine`` (4x4, index -> LPS mm).

    The affine is checked as a file header is: positive finite spacing, orthonormal
    directions, last row ``0 0 0 1``; anything else raises :class:`PinholeError`.
    """

    __slots__ = ("array", "affine", "spacing_mm", "orientation", "info")

    def __init__(self, array: np.ndarray, affine: np.ndarray, info: Optional[dict] = None):
        array = np.asanyarray(array)
        if array.ndim != 3:
            raise PinholeError(f"a volume needs a 3-D array, got shape {array.shape}")
        affine = np.ascontiguousarray(affine, dtype=np.float64)
        spacing, orientation = _native.check_affine(tuple(array.shape), affine)
        self.array = array
        self.affine = affine
        self.spacing_mm = tuple(spacing)
        #: Where each index axis points, e.g. ``"LPS"`` or ``"RAS"`` (DICOM letters).
        self.orientation = orientation
        #: Reader's facts: ``format``, ``warnings``, ``modality``, ``series_uid``.
        self.info = dict(info or {})

    @property
    def affine_ras(self) -> np.ndarray:
        """Index -> RAS mm (nibabel's ``img.affine``)."""
        return LPS_TO_RAS @ self.affine

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)

    @classmethod
    def from_array(
        cls,
        array: np.ndarray,
        *,
        affine_lps: Optional[np.ndarray] = None,
        affine_ras: Optional[np.ndarray] = None,
    ) -> "Volume":
        """A volume from an ``(I, J, K)`` array and exactly one of ``affine_lps`` or
        ``affine_ras`` (index -> mm)."""
        if (affine_lps is None) == (affine_ras is None):
            raise PinholeError("give exactly one of affine_lps or affine_ras")
        if affine_ras is not None:
            affine_lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
        return cls(array, affine_lps)

    @classmethod
    def from_nibabel(cls, image: Any) -> "Volume":
        """A volume from a nibabel image (its scaled data, its RAS affine). The data is
        not copied when the file needs no scaling."""
        data = np.asanyarray(image.dataobj)
        return cls.from_array(data, affine_ras=np.asarray(image.affine))

    def index_to_lps(self, ijk: Sequence[float]) -> np.ndarray:
        """The LPS mm position of a (fractional) voxel index."""
        return (self.affine @ np.append(np.asarray(ijk, dtype=np.float64), 1.0))[:3]

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, dtype={self.array.dtype}, "
            f"spacing_mm={tuple(round(s, 4) for s in self.spacing_mm)}, "
            f"orientation={self.orientation!r})"
        )


def load(path: PathLike, *, series_uid: Optional[str] = None) -> Volume:
    """Reads a NIfTI, NRRD or DICOM-series folder. The array is the reader's buffer (no
    copy), in the file's voxel type after rescaling (HU for a CT). Reader warnings are
    issued as :class:`PinholeWarning` and kept in ``volume.info["warnings"]``."""
    array, affine, info = _native.load(os.fspath(path), series_uid)
    return Volume(array, affine, info)


def gpu_adapter() -> Optional[str]:
    """The hardware GPU ``drr(method="gpu")`` uses (name, backend, driver), or ``None``
    when there is none or only a software rasteriser such as Mesa lavapipe (slower
    than the CPU renderers). Probed once per process."""
    return _native.gpu_adapter()


def drr(
    ct: Volume,
    *,
    lao: float = 0.0,
    cran: float = 0.0,
    size: int = 512,
    pixel_mm: float = 0.78125,
    method: str = "siddon",
    samples: int = 500,
    sid_mm: float = 1020.0,
    sod_mm: float = 850.0,
    source_anterior: bool = False,
    isocenter_lps: Optional[Sequence[float]] = None,
    poses: Optional[np.ndarray] = None,
    allow_non_ct: bool = False,
) -> np.ndarray:
    """Digitally reconstructed radiograph(s) of ``ct`` (HU): line integrals of the
    attenuation (dimensionless, ``float32``), row 0 at the displayed top, as
    ``pinhole drr --out-raw`` writes them.

    ``lao`` (+) / RAO (-) and ``cran`` (+) / CAUD (-) in degrees; ``size`` pixels square
    of ``pixel_mm`` at the detector; rotation about ``isocenter_lps`` (default: the
    volume's centre). ``method``: ``"siddon"`` (exact, CPU; the CLI's default),
    ``"trilinear"`` or ``"gpu"`` (``samples`` per ray); ``"auto"``: ``"gpu"`` when
    :func:`gpu_adapter` finds a hardware GPU, else ``"siddon"``.

    ``poses`` (``(N, 4, 4)``, row-major rigid LPS transforms CT -> C-arm room, as
    ``pose.json``'s ``matrix_lps``) gives ``(N, size, size)``; without, ``(size, size)``.

    Values that do not look like HU (no air, little soft tissue, too bright: the CLI's
    check) are refused with :class:`PinholeError` unless ``allow_non_ct``, then with a
    :class:`PinholeWarning`.
    """
    if method == "auto":
        method = "gpu" if gpu_adapter() is not None else "siddon"
    hu = ct.array
    if hu.dtype not in _DRR_DTYPES:
        hu = np.asarray(hu, dtype=np.float32)
    batched = poses is not None
    if batched:
        poses = np.ascontiguousarray(poses, dtype=np.float64)
        if poses.ndim == 2:
            poses = poses[None]
    images = _native.drr(
        hu,
        ct.affine,
        poses,
        lao_deg=float(lao),
        cran_deg=float(cran),
        sid_mm=float(sid_mm),
        sod_mm=float(sod_mm),
        size_px=int(size),
        pixel_mm=float(pixel_mm),
        source_anterior=bool(source_anterior),
        isocenter_lps=None if isocenter_lps is None else [float(v) for v in isocenter_lps],
        method=method,
        samples=int(samples),
        allow_non_ct=bool(allow_non_ct),
    )
    return images if batched else images[0]


class _Node:
    """Attribute access over a report's JSON objects (``plan.paths[0].length_mm``)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict):
        object.__setattr__(self, "_data", data)

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __dir__(self):
        return list(self._data)

    def keys(self):
        return self._data.keys()

    def to_dict(self) -> dict:
        """A deep copy as plain Python objects."""
        return json.loads(json.dumps(self._data))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(list(self._data)[:8])}...)"


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return _Node(value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


class Report(_Node):
    """A typed report (``plan.json``, ``route.json``, ``measurements.json``,
    ``ablation.json``, ``pose.json``): attribute access to its fields, ``to_dict()``,
    and ``to_json()`` -- the text the CLI writes for the same inputs (sorted keys)."""

    __slots__ = ("_text", "kind")

    def __init__(self, kind: str, text: str):
        super().__init__(json.loads(text))
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "kind", kind)
        for warning in self.warnings:
            _warnings.warn(warning, PinholeWarning, stacklevel=3)

    def to_json(self) -> str:
        return self._text

    @property
    def warnings(self) -> list:
        """What the engine could not use or check (empty when none)."""
        return list(self._data.get("warnings", []))

    def __repr__(self) -> str:
        return f"Report(kind={self.kind!r}, fields={len(self._data)}, warnings={len(self.warnings)})"


def _path(value: Optional[PathLike]) -> Optional[str]:
    return None if value is None else os.fspath(value)


def plan_needle(
    ct: PathLike,
    labels: PathLike,
    *,
    procedure: str,
    target: str,
    labels_table: Optional[str] = None,
    profile: Optional[PathLike] = None,
    candidates: int = 40_000,
    top: int = 5,
    entry_lps: Optional[Sequence[float]] = None,
    unnamed_labels: str = "refuse",
    allow_non_ct: bool = False,
    out: Optional[PathLike] = None,
) -> Report:
    """``pinhole plan needle``: straight-needle paths (``plan.json``). With ``out``, the
    CLI's files are written there too (``plan.json``, ``paths.mrk.json``,
    ``skin_access.vtk``, ``best.png``). When no path keeps every hard rule, raises
    :class:`NoFeasiblePathError` (``candidates``, ``rejected`` per rule)."""
    text = _native.plan_needle(
        os.fspath(ct),
        os.fspath(labels),
        procedure=procedure,
        target=target,
        labels_table=labels_table,
        profile=_path(profile),
        candidates=candidates,
        top=top,
        entry_lps=None if entry_lps is None else [float(v) for v in entry_lps],
        unnamed_labels=unnamed_labels,
        allow_non_ct=allow_non_ct,
        out=_path(out),
    )
    return Report("needle-plan", text)


def plan_vessel(
    labels: PathLike,
    *,
    from_: str,
    to: str,
    ct: Optional[PathLike] = None,
    labels_table: Optional[str] = None,
    vessels: Sequence[str] = (),
    step_mm: float = 1.0,
    tree: bool = False,
    unnamed_labels: str = "refuse",
    allow_non_ct: bool = False,
    out: Optional[PathLike] = None,
) -> Report:
    """``pinhole plan vessel``: a catheter route from ``from_`` to ``to`` (``route.json``)."""
    text = _native.plan_vessel(
        os.fspath(labels),
        from_=from_,
        to=to,
        ct=_path(ct),
        labels_table=labels_table,
        vessels=list(vessels),
        step_mm=step_mm,
        tree=tree,
        unnamed_labels=unnamed_labels,
        allow_non_ct=allow_non_ct,
        out=_path(out),
    )
    return Report("vessel-route", text)


def measure_vessel(
    labels: PathLike,
    *,
    label: str,
    ct: Optional[PathLike] = None,
    labels_table: Optional[str] = None,
    step_mm: float = 1.0,
    nascet_distal_mm: Optional[Sequence[float]] = None,
    ecst_bulb_mm: Optional[float] = None,
    sizing: Optional[PathLike] = None,
    sizing_min_stenosis_pct: Optional[float] = None,
    allow_non_ct: bool = False,
    out: Optional[PathLike] = None,
) -> Report:
    """``pinhole measure``: diameters, stenosis and sizing along one vessel
    (``measurements.json``)."""
    text = _native.measure_vessel(
        os.fspath(labels),
        label=label,
        ct=_path(ct),
        labels_table=labels_table,
        step_mm=step_mm,
        nascet_distal_mm=None if nascet_distal_mm is None else list(nascet_distal_mm),
        ecst_bulb_mm=ecst_bulb_mm,
        sizing=_path(sizing),
        sizing_min_stenosis_pct=sizing_min_stenosis_pct,
        allow_non_ct=allow_non_ct,
        out=_path(out),
    )
    return Report("vessel-measurements", text)


def plan_ablation(
    ct: PathLike,
    labels: PathLike,
    *,
    tumor: str,
    power_w: float,
    minutes: float,
    device: Optional[str] = None,
    devices: Optional[PathLike] = None,
    simulate: bool = False,
    applicator: str = "microwave",
    criterion: str = "arrhenius",
    margin_mm: float = 5.0,
    path: Optional[PathLike] = None,
    grid_mm: float = 1.0,
    max_applicators: int = 3,
    labels_table: Optional[str] = None,
    unnamed_labels: str = "refuse",
    allow_non_ct: bool = False,
    out: Optional[PathLike] = None,
) -> Report:
    """``pinhole plan ablation``: the zone (device table or ``simulate``), coverage of
    tumour + margin, minimal ablative margin, heat sinks (``ablation.json``)."""
    text = _native.plan_ablation(
        os.fspath(ct),
        os.fspath(labels),
        tumor=tumor,
        power_w=power_w,
        minutes=minutes,
        device=device,
        devices=_path(devices),
        simulate=simulate,
        applicator=applicator,
        criterion=criterion,
        margin_mm=margin_mm,
        path=_path(path),
        grid_mm=grid_mm,
        max_applicators=max_applicators,
        labels_table=labels_table,
        unnamed_labels=unnamed_labels,
        allow_non_ct=allow_non_ct,
        out=_path(out),
    )
    return Report("ablation-plan", text)


def register(
    ct: PathLike,
    xray: PathLike,
    *,
    out: Optional[PathLike] = None,
    **options: Any,
) -> Report:
    """``pinhole register``: the CT's pose relative to the C-arm from a live X-ray
    (``pose.json``). Options as the CLI's, in snake case: ``frame``, ``labels``,
    ``mask_labels``, ``lao_deg``, ``cran_deg``, ``sid_mm``, ``sod_mm``, ``pixel_mm``,
    ``source_anterior``, ``isocenter_lps``, ``invert``, ``similarity``, ``levels_mm``,
    ``seed``, ``gpu``, ``min_similarity``, ``mirror_check``, ``allow_non_ct``."""
    if "labels" in options:
        options["labels"] = _path(options["labels"])
    text = _native.register(os.fspath(ct), os.fspath(xray), out=_path(out), **options)
    return Report("registration", text)


class Guidance:
    """Live needle guidance without a server: the engine of ``pinhole serve`` for a
    ``plan`` (``plan.json``) or only a ``target`` on the CT's label map. Building
    computes the risk structures' distance fields (seconds on a full CT);
    :meth:`evaluate` is then microseconds and thread-safe.

    ``description`` is ``/api/session``'s report (plan, risk groups, thresholds,
    warnings); its warnings are issued as :class:`PinholeWarning`."""

    __slots__ = ("_engine", "description")

    def __init__(
        self,
        ct: PathLike,
        labels: PathLike,
        *,
        plan: Optional[PathLike] = None,
        target: Optional[str] = None,
        labels_table: Optional[str] = None,
        registration: Optional[PathLike] = None,
        unnamed_labels: str = "refuse",
        allow_non_ct: bool = False,
    ):
        self._engine = _native.Guidance(
            os.fspath(ct),
            os.fspath(labels),
            plan=_path(plan),
            target=target,
            labels_table=labels_table,
            registration=_path(registration),
            unnamed_labels=unnamed_labels,
            allow_non_ct=allow_non_ct,
        )
        self.description = Report("guidance-session", self._engine.description())

    def evaluate(
        self,
        tip_lps: Sequence[float],
        axis_lps: Sequence[float],
        *,
        seq: int = 0,
        timestamp_s: float = 0.0,
        device: str = "python",
    ) -> Report:
        """The metrics the guidance server sends for this needle pose: the tip and the
        axis (hub -> tip) in LPS mm."""
        text = self._engine.evaluate(
            [float(v) for v in tip_lps],
            [float(v) for v in axis_lps],
            seq=seq,
            timestamp_s=timestamp_s,
            device=device,
        )
        return Report("guidance-metrics", text)


def guidance(
    ct: PathLike,
    labels: PathLike,
    poses: Sequence[tuple],
    **options: Any,
) -> list:
    """Metrics for each ``(tip_lps, axis_lps)`` pose: :class:`Guidance` built once with
    ``options`` (``plan`` or ``target``, ``labels_table`` ...), then evaluated."""
    engine = Guidance(ct, labels, **options)
    return [engine.evaluate(tip, axis, seq=n) for n, (tip, axis) in enumerate(poses)]
