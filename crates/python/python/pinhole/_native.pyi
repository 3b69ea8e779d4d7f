"""Type stubs of the compiled module (crates/python/src). Use the wrappers in
``pinhole`` (``load``, ``drr``, ``plan_needle`` ...); this layer takes plain arrays and
paths and returns report JSON text. Not for clinical use."""

from typing import Any, Optional, Sequence

import numpy as np
import numpy.typing as npt

class PinholeError(Exception):
    """A request Pinhole refuses or cannot complete (the CLI's error message)."""

class NoFeasiblePathError(PinholeError):
    """No needle path keeps every hard rule (an answer, not a fault)."""

    candidates: int
    rejected: dict[str, int]

class PinholeWarning(UserWarning):
    """Something the result's user must know (also in the report's ``warnings``)."""

def version() -> str: ...
def disclaimer() -> str: ...
def load(
    path: str, series_uid: Optional[str] = None
) -> tuple[np.ndarray, npt.NDArray[np.float64], dict[str, Any]]: ...
def check_affine(
    dims: Sequence[int], affine_lps: npt.NDArray[np.float64]
) -> tuple[tuple[float, float, float], str]: ...
def gpu_adapter() -> Optional[str]: ...
def drr(
    hu: np.ndarray,
    affine_lps: npt.NDArray[np.float64],
    poses: Optional[npt.NDArray[np.float64]] = None,
    *,
    lao_deg: float = 0.0,
    cran_deg: float = 0.0,
    sid_mm: float = 1020.0,
    sod_mm: float = 850.0,
    size_px: int = 512,
    pixel_mm: float = 0.78125,
    source_anterior: bool = False,
    isocenter_lps: Optional[Sequence[float]] = None,
    method: str = "siddon",
    samples: int = 500,
    allow_non_ct: bool = False,
) -> npt.NDArray[np.float32]: ...
def plan_needle(ct: str, labels: str, *, procedure: str, target: str, **options: Any) -> str: ...
def plan_vessel(labels: str, *, from_: str, to: str, **options: Any) -> str: ...
def measure_vessel(labels: str, *, label: str, **options: Any) -> str: ...
def plan_ablation(
    ct: str, labels: str, *, tumor: str, power_w: float, minutes: float, **options: Any
) -> str: ...
def register(ct: str, xray: str, **options: Any) -> str: ...

class Guidance:
    def __init__(
        self,
        ct: str,
        labels: str,
        *,
        plan: Optional[str] = None,
        target: Optional[str] = None,
        labels_table: Optional[str] = None,
        registration: Optional[str] = None,
        unnamed_labels: str = "refuse",
        allow_non_ct: bool = False,
    ) -> None: ...
    def description(self) -> str: ...
    def evaluate(
        self,
        tip_lps: Sequence[float],
        axis_lps: Sequence[float],
        *,
        seq: int = 0,
        timestamp_s: float = 0.0,
        device: str = "python",
    ) -> str: ...
