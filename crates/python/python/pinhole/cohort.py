"""Cohorts on Ray: needle plans for many cases, and DRR training sets.

NOT FOR CLINICAL USE. Pinhole is research and engineering software; every report says so.

Two entry points, both with one Ray task per unit of work (``pip install
'pinhole[cohort]'`` for Ray and pyarrow):

* :func:`run` plans one needle per manifest row (``pinhole.plan_needle``) and writes
  one folder per case plus a summary table. Each case folder appears atomically (a
  temporary folder renamed into place), so a case's result is complete or absent,
  whatever dies when. A rerun skips the cases whose inputs and parameters are
  unchanged (``inputs_hash``) and whose result is complete.
* :func:`drr_dataset` renders DRRs for randomly sampled C-arm poses into ``.npy`` shards
  that plain NumPy reads (``numpy.load(path, mmap_mode="r")``), with a ``manifest.json``.

Ray runs embedded on this machine by default (``ray.init()``, no cluster needed), or
connects to ``ray_address``; if Ray is already initialised, that session is used as is.
On a cluster, ``out`` and the input files must be on a file system every node sees
under the same path. One driver per ``out`` folder at a time: a run removes the
temporary folders it finds there (left by attempts that died).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import importlib
import io
import json
import logging
import math
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

import pinhole
from . import NoFeasiblePathError, PinholeError, PinholeWarning

__all__ = ["Case", "SUMMARY_COLUMNS", "drr_dataset", "inputs_hash", "read_manifest", "run"]

PathLike = Union[str, "os.PathLike[str]"]

#: Manifest columns every row needs.
REQUIRED_COLUMNS: Tuple[str, ...] = ("case", "ct", "labels", "target")
#: Manifest columns a row may add (an empty cell means: the run's default).
OPTIONAL_COLUMNS: Tuple[str, ...] = ("labels_table", "procedure", "profile")
#: The files ``pinhole plan needle --out`` writes; a case folder with status ok has all.
PLAN_FILES: Tuple[str, ...] = ("plan.json", "paths.mrk.json", "skin_access.vtk", "best.png")
#: A case's status when the planner found no path that keeps every hard rule: an
#: answer (``feasible`` false, rejection counts in the summary), not a failure.
INFEASIBLE = "infeasible"
#: Statuses that answer the case (a rerun skips them; a failure never replaces them).
ANSWERS = ("ok", INFEASIBLE)
#: The per-case record written next to the plan files.
CASE_RECORD = "case.json"
#: Columns of ``summary.csv`` / ``summary.parquet``, in order.
SUMMARY_COLUMNS: Tuple[str, ...] = (
    "case",
    "status",
    "error",
    "feasible",
    "n_paths",
    "best_length_mm",
    "best_min_clearance_mm",
    "candidates",
    "feasible_candidates",
    "rejected",
    "seconds",
    "skipped",
)
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_TEMP_MARKERS = (".tmp-", ".old-")
_HASH_CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------- manifest


@dataclass(frozen=True)
class Case:
    """One manifest row, paths resolved against the manifest's folder."""

    case: str
    ct: str
    labels: str
    target: str
    procedure: str
    #: A built-in table name (``totalseg-v2``) or a file path; ``None``: the planner's.
    labels_table: Optional[str]
    #: 1-based line of the row in the manifest (the header is line 1).
    line: int
    #: A profile file (TOML) replacing the shipped profile of ``procedure``.
    profile: Optional[str] = None


def read_manifest(manifest: PathLike, procedure: Optional[str] = None) -> List[Case]:
    """Reads a cohort manifest: a CSV with the columns ``case,ct,labels,target`` and
    optionally ``labels_table`` and ``procedure`` (per row; an empty cell takes
    ``procedure``). Relative paths are relative to the manifest's folder.

    Raises :class:`PinholeError` for a missing file or column, an empty manifest, an
    empty required cell, a case id that is not a plain folder name, a duplicate case id
    or a row without a procedure. Other columns are not used (:func:`run` says so in
    ``cohort.json``'s warnings)."""
    return _load_manifest(Path(manifest), procedure)[0]


def _load_manifest(path: Path, procedure: Optional[str]) -> Tuple[List[Case], List[str]]:
    """The cases and the names of the columns not used."""
    header, rows = _read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise PinholeError(
            f"manifest {path}: missing column(s) {', '.join(missing)} "
            f"(needs {','.join(REQUIRED_COLUMNS)}; optional {','.join(OPTIONAL_COLUMNS)})"
        )
    if not rows:
        raise PinholeError(f"manifest {path}: no cases (only a header)")
    base = path.resolve().parent
    cases = [_case_from_row(path, base, line, row, procedure) for line, row in rows]
    _refuse_duplicates(path, cases)
    unused = [c for c in header if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    return cases, unused


def _read_csv(path: Path) -> Tuple[List[str], List[Tuple[int, Dict[str, str]]]]:
    """The header (stripped names) and the non-blank rows with their line numbers."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise PinholeError(f"manifest {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PinholeError(f"manifest {path}: cannot read it ({exc})") from None
    reader = csv.reader(text.splitlines())
    lines = [(n, [cell.strip() for cell in cells]) for n, cells in enumerate(reader, 1)]
    lines = [(n, cells) for n, cells in lines if any(cells)]
    if not lines:
        raise PinholeError(f"manifest {path}: empty file (expected a header row)")
    (_, header), body = lines[0], lines[1:]
    if len(set(header)) != len(header):
        raise PinholeError(f"manifest {path}: repeated column name in the header {header}")
    rows = []
    for line, cells in body:
        if len(cells) > len(header):
            raise PinholeError(
                f"manifest {path} line {line}: {len(cells)} fields, the header has {len(header)}"
            )
        cells = cells + [""] * (len(header) - len(cells))
        rows.append((line, dict(zip(header, cells))))
    return header, rows


def _case_from_row(
    path: Path, base: Path, line: int, row: Dict[str, str], default_procedure: Optional[str]
) -> Case:
    where = f"manifest {path} line {line}"
    empty = [c for c in REQUIRED_COLUMNS if not row[c]]
    if empty:
        raise PinholeError(f"{where}: empty {', '.join(empty)}")
    case_id = row["case"]
    if not _CASE_ID.match(case_id):
        raise PinholeError(
            f"{where}: case id {case_id!r} is not a plain folder name "
            "(letters, digits, '.', '_', '-'; not starting with '.', '_' or '-')"
        )
    procedure = row.get("procedure") or default_procedure
    if not procedure:
        raise PinholeError(f"{where}: no procedure (give --procedure or a procedure column)")
    return Case(
        case=case_id,
        ct=str(base / row["ct"]),
        labels=str(base / row["labels"]),
        target=row["target"],
        procedure=procedure,
        labels_table=_resolve_labels_table(base, row.get("labels_table") or None),
        line=line,
        profile=str(base / row["profile"]) if row.get("profile") else None,
    )


def _resolve_labels_table(base: Path, value: Optional[str]) -> Optional[str]:
    """A file next to the manifest becomes its path; anything else (a built-in name such
    as ``totalseg-v2``, an absolute path) is passed on unchanged."""
    if value is None:
        return None
    candidate = base / value
    return str(candidate) if candidate.is_file() else value


def _refuse_duplicates(path: Path, cases: Sequence[Case]) -> None:
    first: Dict[str, int] = {}
    for case in cases:
        if case.case in first:
            raise PinholeError(
                f"manifest {path}: duplicate case id {case.case!r} "
                f"(lines {first[case.case]} and {case.line})"
            )
        first[case.case] = case.line


# --------------------------------------------------------------------------- hashing


def _file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _FileHashes:
    """SHA-256 of input files, each file read once per run (cohorts share CTs)."""

    def __init__(self) -> None:
        self._known: Dict[Tuple[str, int, int], str] = {}

    def __call__(self, path: str) -> str:
        stat = os.stat(path)
        key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
        if key not in self._known:
            self._known[key] = _file_sha256(path)
        return self._known[key]


def inputs_hash(
    case: Case, *, candidates: int, top: int, file_sha256: Callable[[str], str] = _file_sha256
) -> str:
    """SHA-256 identifying a case's result: over the SHA-256 of the bytes of the CT, the
    label map, the labels-table file (when it is a file; else its name) and the profile
    file (when given), and the
    parameters (procedure, target, candidates, top, ``pinhole.__version__``), as
    canonical JSON. Raises ``OSError`` when an input file cannot be read."""
    table = case.labels_table
    table_is_file = table is not None and os.path.isfile(table)
    identity = {
        "ct_sha256": file_sha256(case.ct),
        "labels_sha256": file_sha256(case.labels),
        "labels_table_sha256": file_sha256(table) if table_is_file else None,
        "labels_table_name": None if table_is_file else table,
        "profile_sha256": file_sha256(case.profile) if case.profile else None,
        "procedure": case.procedure,
        "target": case.target,
        "candidates": int(candidates),
        "top": int(top),
        "pinhole_version": pinhole.__version__,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- atomic files


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Writes ``path`` with ``write(handle)`` through a sibling temporary file, synced,
    then renamed into place; the temporary file is removed when anything fails."""
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    _write_atomic(path, lambda handle: handle.write(data))


def _write_json_atomic(path: Path, value: Any) -> None:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    _write_bytes_atomic(path, text.encode("utf-8"))


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``numpy.save`` atomically (the file is plain ``.npy``)."""
    _write_atomic(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _is_temporary(name: str) -> bool:
    return name.startswith(".") and any(marker in name for marker in _TEMP_MARKERS)


def _remove_temporaries(folder: Path) -> List[str]:
    """Removes the temporary files and folders this module names (``.<name>.tmp-<id>``,
    ``.<name>.old-<id>``) directly in ``folder``; returns their names."""
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        if _is_temporary(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
            removed.append(entry.name)
    return removed


# --------------------------------------------------------------------------- one case


def _read_record(folder: Path) -> Optional[dict]:
    """A case folder's ``case.json``, or ``None`` when absent or unreadable."""
    try:
        return json.loads((folder / CASE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete_ok(folder: Path, expected_hash: str) -> bool:
    """True when the folder holds an answer for exactly these inputs: a plan with all
    its files, or the planner's "no feasible path" with its counts."""
    record = _read_record(folder)
    if record is None or record.get("inputs_hash") != expected_hash:
        return False
    if record.get("status") == INFEASIBLE:
        return True
    return record.get("status") == "ok" and all((folder / n).is_file() for n in PLAN_FILES)


def _keep_existing(existing: Optional[dict], ours: dict) -> bool:
    """Whether a result already in place wins over ours: the same inputs, and not a
    failure replacing a success (results are deterministic, so either is right)."""
    if existing is None or existing.get("inputs_hash") != ours["inputs_hash"]:
        return False
    return existing.get("status") in ANSWERS or ours["status"] == "failed"


def _renamed_into_place(tmp: Path, final: Path) -> bool:
    """``os.rename(tmp, final)``; False when ``final`` exists (a non-empty folder)."""
    try:
        os.rename(tmp, final)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        return False


def _publish(tmp: Path, final: Path, record: dict, attempts: int = 8) -> dict:
    """Moves the complete folder ``tmp`` to ``final`` by renames only; returns the record
    now in place. A concurrent duplicate's equal result is kept (``tmp`` is deleted); a
    stale result (other inputs, or a failure) is renamed aside, replaced and deleted."""
    for _ in range(attempts):
        if _renamed_into_place(tmp, final):
            return record
        existing = _read_record(final)
        if _keep_existing(existing, record):
            shutil.rmtree(tmp, ignore_errors=True)
            return existing  # type: ignore[return-value]
        aside = final.with_name(f".{final.name}.old-{uuid.uuid4().hex}")
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            continue  # another attempt moved it: try again
        try:
            if _renamed_into_place(tmp, final):
                return record
        finally:
            shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(tmp, ignore_errors=True)
    raise PinholeError(f"case folder {final}: could not be put in place after {attempts} tries")


def _case_record(
    case: Case,
    digest: Optional[str],
    error: Optional[str],
    seconds: float,
    no_path: Optional[dict] = None,
) -> dict:
    """``case.json``. ``no_path``: the planner's counts when no path keeps every hard
    rule (status ``infeasible``: an answer, not a failure)."""
    status = "failed" if error is not None else INFEASIBLE if no_path is not None else "ok"
    record = {
        "case": case.case,
        "inputs_hash": digest,
        "status": status,
        "error": error,
        "seconds": round(seconds, 6),
        "procedure": case.procedure,
        "target": case.target,
    }
    if no_path is not None:
        record["no_path"] = no_path
    return record


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, PinholeError) else f"{type(exc).__name__}: {text}"


def _new_temp_folder(cases_dir: Path, case_id: str) -> Path:
    tmp = cases_dir / f".{case_id}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir(parents=True)
    return tmp


def _plan_into(case: Case, tmp: Path, candidates: int, top: int) -> Optional[dict]:
    """``pinhole.plan_needle`` writing the CLI's files into ``tmp``. Its warnings are in
    ``plan.json``; here they are not repeated on the worker's stderr. Returns the
    planner's counts (``candidates``, ``rejected`` per rule, ``reason``) when no path
    keeps every hard rule, else ``None``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinholeWarning)
        try:
            pinhole.plan_needle(
                case.ct,
                case.labels,
                procedure=case.procedure,
                target=case.target,
                labels_table=case.labels_table,
                profile=case.profile,
                candidates=candidates,
                top=top,
                out=tmp,
            )
        except NoFeasiblePathError as exc:
            return {
                "candidates": int(exc.candidates),
                "rejected": {str(k): int(v) for k, v in exc.rejected.items()},
                "reason": str(exc),
            }
    return None


def plan_case(case: Case, digest: str, cases_dir: str, candidates: int, top: int) -> dict:
    """Plans one case into ``cases_dir/<case>/`` (atomically) and returns its record. A
    planner failure is recorded (``status: "failed"``), not raised; only a failure to
    write the folder raises. Runs in a Ray worker, or anywhere."""
    cases_path = Path(cases_dir)
    tmp = _new_temp_folder(cases_path, case.case)
    try:
        start = time.perf_counter()
        error, no_path = None, None
        try:
            no_path = _plan_into(case, tmp, candidates, top)
        except Exception as exc:  # a failing case is data, never the cohort's end
            error = _describe(exc)
        if error is not None or no_path is not None:
            shutil.rmtree(tmp)
            tmp.mkdir()
        record = _case_record(case, digest, error, time.perf_counter() - start, no_path)
        _write_json_atomic(tmp / CASE_RECORD, record)
        return _publish(tmp, cases_path / case.case, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _record_failure(case: Case, digest: Optional[str], cases_dir: Path, error: str) -> dict:
    """Writes a failed case's folder from the driver (inputs unreadable, or the Ray task
    itself lost after its retries)."""
    tmp = _new_temp_folder(cases_dir, case.case)
    try:
        record = _case_record(case, digest, error, 0.0)
        _write_json_atomic(tmp / CASE_RECORD, record)
        return _publish(tmp, cases_dir / case.case, record)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- summary


def _best_min_clearance_mm(path: dict) -> Optional[float]:
    """The smallest non-null per-risk-group clearance of one path."""
    values = [v for v in (path.get("min_clearance_mm") or {}).values() if v is not None]
    return min(values) if values else None


def summary_row(folder: Path, case_id: str, skipped: bool) -> dict:
    """One summary row from a case folder (``case.json`` and ``plan.json``).

    From ``plan.json``: ``paths`` (``n_paths``; ``feasible``: any path with
    ``feasible: true``), ``paths[0].length_mm`` and ``paths[0].min_clearance_mm`` (rank
    1; the smallest non-null group clearance), ``candidates``, ``feasible`` (candidates
    that passed the coarse screen, as ``feasible_candidates``) and ``rejected`` (counts
    by first broken rule, summed; it also counts screen passes that failed the exact
    clearance check, which the plan's warnings number). A failed case has only
    ``status``, ``error``, ``seconds`` and ``skipped``."""
    record = _read_record(folder)
    row: Dict[str, Any] = {column: None for column in SUMMARY_COLUMNS}
    row.update(case=case_id, skipped=skipped)
    if record is None:
        row.update(status="failed", error=f"no {CASE_RECORD} in {folder} after the run")
        return row
    row.update(status=record["status"], error=record.get("error"), seconds=record.get("seconds"))
    if record["status"] == INFEASIBLE:
        counts = record.get("no_path") or {}
        row.update(
            feasible=False,
            n_paths=0,
            candidates=counts.get("candidates"),
            feasible_candidates=0,
            rejected=int(sum((counts.get("rejected") or {}).values())),
        )
        return row
    if record["status"] != "ok":
        return row
    plan = json.loads((folder / "plan.json").read_text(encoding="utf-8"))
    paths = plan.get("paths") or []
    best = paths[0] if paths else {}
    rejected = plan.get("rejected")
    row.update(
        feasible=any(p.get("feasible") for p in paths),
        n_paths=len(paths),
        best_length_mm=best.get("length_mm"),
        best_min_clearance_mm=_best_min_clearance_mm(best) if best else None,
        candidates=plan.get("candidates"),
        feasible_candidates=plan.get("feasible"),
        rejected=None if rejected is None else int(sum(rejected.values())),
    )
    return row


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_summary_csv(path: Path, rows: Sequence[dict]) -> None:
    """Empty cell: no value; booleans ``true``/``false``; floats at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(SUMMARY_COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in SUMMARY_COLUMNS])
    _write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))


def _summary_schema():  # -> pyarrow.Schema
    import pyarrow as pa

    types = {
        "case": pa.string(),
        "status": pa.string(),
        "error": pa.string(),
        "feasible": pa.bool_(),
        "n_paths": pa.int64(),
        "best_length_mm": pa.float64(),
        "best_min_clearance_mm": pa.float64(),
        "candidates": pa.int64(),
        "feasible_candidates": pa.int64(),
        "rejected": pa.int64(),
        "seconds": pa.float64(),
        "skipped": pa.bool_(),
    }
    return pa.schema([(c, types[c]) for c in SUMMARY_COLUMNS])


def _require_pyarrow() -> None:
    try:
        importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise PinholeError("summary.parquet needs pyarrow: pip install 'pinhole[cohort]'") \
            from None


def _write_summary_parquet(path: Path, rows: Sequence[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _summary_schema()
    table = pa.Table.from_pylist([dict(row) for row in rows], schema=schema)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------- Ray


def _import_ray():
    try:
        import ray
    except ImportError:
        raise PinholeError("pinhole.cohort needs Ray: pip install 'pinhole[cohort]'") from None
    return ray


@contextlib.contextmanager
def _ray_session(
    ray_address: Optional[str], num_cpus: Optional[int], notes: List[str]
) -> Iterator[Any]:
    """Ray, initialised for the block: an existing session as is (noting arguments it
    makes moot), else ``ray.init(address=...)`` or an embedded local instance, shut
    down afterwards."""
    ray = _import_ray()
    if ray.is_initialized():
        if ray_address is not None or num_cpus is not None:
            notes.append("Ray was already initialised: ray_address/num_cpus not used")
        yield ray
        return
    if ray_address is not None and num_cpus is not None:
        raise PinholeError("num_cpus applies to a local Ray only; not with ray_address")
    kwargs: Dict[str, Any] = {"logging_level": logging.WARNING}
    if ray_address is not None:
        kwargs["address"] = ray_address
    else:
        kwargs.update(num_cpus=num_cpus, include_dashboard=False)
    ray.init(**kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


class _Progress:
    """Finished cases: a tqdm bar when tqdm is installed, else one line each on stderr."""

    def __init__(self, total: int, enabled: bool, label: str):
        self._bar = None
        self._enabled = enabled and total > 0
        self._total, self._done, self._label = total, 0, label
        if self._enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=label, unit="case", file=sys.stderr)

    def finished(self, case_id: str, status: str, seconds: Optional[float]) -> None:
        self._done += 1
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(f"{case_id}: {status}", refresh=False)
            self._bar.update(1)
            return
        took = "" if seconds is None else f" ({seconds:.2f} s)"
        print(f"{self._label} [{self._done}/{self._total}] {case_id}: {status}{took}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _run_on_ray(
    ray: Any,
    jobs: Sequence[Tuple[Case, str]],
    cases_dir: Path,
    candidates: int,
    top: int,
    max_retries: int,
    progress: _Progress,
) -> None:
    """One Ray task per job; a task lost after its retries is recorded as failed."""
    task = ray.remote(num_cpus=1, max_retries=max_retries, retry_exceptions=False)(plan_case)
    pending = {
        task.remote(case, digest, str(cases_dir), candidates, top): (case, digest)
        for case, digest in jobs
    }
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            case, digest = pending.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as exc:  # the task died beyond its retries (node, OOM, ...)
                error = f"the Ray task was lost after {max_retries} retries: {_describe(exc)}"
                record = _record_failure(case, digest, cases_dir, error)
            progress.finished(case.case, record["status"], record.get("seconds"))


# --------------------------------------------------------------------------- run


def _check_run_parameters(candidates: int, top: int, max_retries: int) -> None:
    for name, value, low in (("candidates", candidates, 1), ("top", top, 1),
                             ("max_retries", max_retries, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise PinholeError(f"{name} must be an integer >= {low}, got {value!r}")


def _triage(
    cases: Sequence[Case], cases_dir: Path, candidates: int, top: int
) -> Tuple[List[Tuple[Case, str]], List[str], List[Tuple[Case, str]]]:
    """Splits the cases into (to run, already done, unreadable inputs with the reason)."""
    hashes = _FileHashes()
    jobs, done, unreadable = [], [], []
    for case in cases:
        try:
            digest = inputs_hash(case, candidates=candidates, top=top, file_sha256=hashes)
        except OSError as exc:
            unreadable.append((case, f"input not readable: {exc}"))
            continue
        if _is_complete_ok(cases_dir / case.case, digest):
            done.append(case.case)
        else:
            jobs.append((case, digest))
    return jobs, done, unreadable


def run(
    manifest: PathLike,
    procedure: Optional[str],
    out: PathLike,
    *,
    ray_address: Optional[str] = None,
    num_cpus: Optional[int] = None,
    candidates: int = 40_000,
    top: int = 5,
    progress: bool = True,
    max_retries: int = 3,
) -> List[dict]:
    """Plans a needle for every manifest row on Ray; returns the summary rows (one per
    case, sorted by case id; columns :data:`SUMMARY_COLUMNS`).

    ``procedure`` is the default for rows without a ``procedure`` cell. Writes, under
    ``out``: ``cases/<case>/`` (``plan.json``, ``paths.mrk.json``, ``skin_access.vtk``,
    ``best.png`` and ``case.json``; a failed case holds only ``case.json`` with its
    ``error``; an ``infeasible`` case -- no path keeps every hard rule -- only
    ``case.json`` with the planner's counts), ``summary.csv``, ``summary.parquet`` and
    ``cohort.json`` (counts, parameters, the disclaimer, warnings). A case whose
    ``case.json`` has the same :func:`inputs_hash` and an answer (``ok`` or
    ``infeasible``) is skipped (``skipped`` in its row).

    A malformed manifest raises :class:`PinholeError` before anything runs; a failing
    case never stops the cohort. Each case is one Ray task with ``max_retries`` retries
    for a lost worker or node (exceptions are not retried: the planner is
    deterministic)."""
    _check_run_parameters(candidates, top, max_retries)
    cases, unused = _load_manifest(Path(manifest), procedure)
    _import_ray()  # both needed: refuse before anything runs
    _require_pyarrow()
    notes = [f"manifest column {c!r} is not used" for c in unused]
    out_path = Path(out)
    cases_dir = out_path / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    stale = _remove_temporaries(cases_dir)
    started = time.perf_counter()

    jobs, done, unreadable = _triage(cases, cases_dir, candidates, top)
    progress_bar = _Progress(len(jobs) + len(unreadable), progress, "pinhole cohort")
    if progress:
        print(f"pinhole cohort: {len(cases)} cases, {len(done)} skipped (done), "
              f"{len(jobs) + len(unreadable)} to run", file=sys.stderr, flush=True)
    try:
        for case, reason in unreadable:
            record = _record_failure(case, None, cases_dir, reason)
            progress_bar.finished(case.case, record["status"], None)
        if jobs:
            with _ray_session(ray_address, num_cpus, notes) as ray:
                _run_on_ray(ray, jobs, cases_dir, candidates, top, max_retries, progress_bar)
    finally:
        progress_bar.close()
    stale += _remove_temporaries(cases_dir)

    skipped = set(done)
    rows = [summary_row(cases_dir / c.case, c.case, c.case in skipped)
            for c in sorted(cases, key=lambda c: c.case)]
    _write_summary_csv(out_path / "summary.csv", rows)
    _write_summary_parquet(out_path / "summary.parquet", rows)
    parameters = {"procedure": procedure, "candidates": candidates, "top": top,
                  "max_retries": max_retries, "ray_address": ray_address, "num_cpus": num_cpus}
    report = _cohort_report(manifest, parameters, rows, stale, notes,
                            time.perf_counter() - started)
    _write_json_atomic(out_path / "cohort.json", report)
    # What cohort.json says the run could not use or do, also to the caller.
    for text in report["warnings"]:
        warnings.warn(text, PinholeWarning, stacklevel=2)
    return rows


def _cohort_report(
    manifest: PathLike,
    parameters: dict,
    rows: Sequence[dict],
    stale: Sequence[str],
    notes: Sequence[str],
    seconds: float,
) -> dict:
    warnings_ = list(notes)
    if stale:
        warnings_.append(
            f"removed {len(stale)} temporary folder(s) of attempts that did not finish "
            f"(a lost worker or node, or an interrupted run): {', '.join(stale)}"
        )
    for row in rows:
        if row["status"] not in ANSWERS:
            warnings_.append(f"case {row['case']} failed: {row['error']}")
        elif not row["feasible"]:
            warnings_.append(f"case {row['case']}: no feasible path")
    return {
        "format": "pinhole-cohort",
        "format_version": 1,
        "pinhole_version": pinhole.__version__,
        "disclaimer": pinhole.DISCLAIMER,
        "manifest": str(Path(manifest).resolve()),
        "parameters": parameters,
        "counts": counts(rows),
        "summary": ["summary.csv", "summary.parquet"],
        "wall_seconds": round(seconds, 3),
        "warnings": warnings_,
    }


def counts(rows: Sequence[dict]) -> Dict[str, int]:
    """Cases; answered (``ok``: a plan, or ``infeasible``: no path keeps every hard rule)
    and failed; skipped (resumed) and ran; feasible and infeasible (answered cases)."""
    ok = [r for r in rows if r["status"] in ANSWERS]
    skipped = sum(1 for r in rows if r["skipped"])
    return {
        "cases": len(rows),
        "ok": len(ok),
        "failed": len(rows) - len(ok),
        "skipped": skipped,
        "ran": len(rows) - skipped,
        "feasible": sum(1 for r in ok if r["feasible"]),
        "infeasible": sum(1 for r in ok if not r["feasible"]),
    }


# --------------------------------------------------------------------------- DRR datasets

#: Detector width the default ``pixel_mm`` gives at any ``size`` (``pinhole.drr``'s
#: default: 512 px x 0.78125 mm).
DETECTOR_MM = 400.0
DRR_METHODS: Tuple[str, ...] = ("siddon", "trilinear", "gpu", "auto")
_SHARD_NAME = re.compile(r"^(images|poses)-\d{5,}\.npy$")


def carm_rotation(lao_deg: float, cran_deg: float) -> np.ndarray:
    """The C-arm's rotation at LAO/CRAN (LPS): ``Rz(lao) @ Rx(-cran)`` -- LAO about the
    patient's S axis (+z) moving the detector to the patient's left, then CRAN about the
    rotated L axis tilting the detector towards the head (``pinhole.drr``'s geometry)."""
    lao, cran = math.radians(lao_deg), math.radians(cran_deg)
    cz, sz, cx, sx = math.cos(lao), math.sin(lao), math.cos(-cran), math.sin(-cran)
    rz = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    return rz @ rx


def pose_matrix(
    lao_deg: float, cran_deg: float, translation_mm: Sequence[float], center_lps: Sequence[float]
) -> np.ndarray:
    """The rigid LPS transform CT -> C-arm room that makes the nominal (LAO 0, CRAN 0)
    C-arm see the CT as a C-arm at ``lao_deg``/``cran_deg`` would, shifted by
    ``translation_mm``: ``T(t) @ T(c) @ R.T @ T(-c)`` with ``R = carm_rotation`` and
    ``c`` the CT centre (``pinhole.drr``'s default isocentre). With ``t = 0``,
    ``drr(ct, poses=[P])`` equals ``drr(ct, lao=lao_deg, cran=cran_deg)``."""
    rotation = carm_rotation(lao_deg, cran_deg).T
    center = np.asarray(center_lps, dtype=np.float64)
    pose = np.eye(4)
    pose[:3, :3] = rotation
    pose[:3, 3] = center - rotation @ center + np.asarray(translation_mm, dtype=np.float64)
    return pose


@dataclass(frozen=True)
class PoseDistribution:
    """Where DRR poses are drawn from (angles in degrees, translation in LPS mm)."""

    lao_range_deg: Tuple[float, float]
    cran_range_deg: Tuple[float, float]
    translation_sd_mm: float

    def check(self) -> None:
        for name, (low, high) in (("lao_range_deg", self.lao_range_deg),
                                  ("cran_range_deg", self.cran_range_deg)):
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise PinholeError(f"{name} must be finite (low, high) with low <= high, "
                                   f"got {(low, high)}")
        if not (math.isfinite(self.translation_sd_mm) and self.translation_sd_mm >= 0):
            raise PinholeError(f"translation_sd_mm must be finite and >= 0, "
                               f"got {self.translation_sd_mm}")

    def sample(self, n: int, seed: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(lao_deg (n,), cran_deg (n,), translation_mm (n, 3))`` from
        ``numpy.random.default_rng(seed)``: LAO uniform, then CRAN uniform, then the
        translation normal (mean 0, ``translation_sd_mm``) per LPS axis, independent."""
        rng = np.random.default_rng(seed)
        lao = rng.uniform(*self.lao_range_deg, size=n)
        cran = rng.uniform(*self.cran_range_deg, size=n)
        translation = rng.normal(0.0, self.translation_sd_mm, size=(n, 3))
        return lao, cran, translation

    def describe(self, seed: int) -> dict:
        return {
            "seed": seed,
            "generator": "numpy.random.default_rng(seed) (PCG64); draws in this order: "
            "lao_deg uniform (n), cran_deg uniform (n), translation_mm normal (n, 3)",
            "lao_deg": {"distribution": "uniform", "low": self.lao_range_deg[0],
                        "high": self.lao_range_deg[1]},
            "cran_deg": {"distribution": "uniform", "low": self.cran_range_deg[0],
                         "high": self.cran_range_deg[1]},
            "translation_mm": {"distribution": "normal", "mean": 0.0,
                               "sd": self.translation_sd_mm,
                               "axes": "L, P, S independently (room LPS)"},
        }


def render_shard(
    hu: np.ndarray,
    affine_lps: np.ndarray,
    poses: np.ndarray,
    index: int,
    out: str,
    size: int,
    pixel_mm: float,
    method: str,
) -> dict:
    """Renders one shard's DRRs and writes ``images-<index>.npy`` and
    ``poses-<index>.npy`` into ``out`` (each atomically); returns their names and
    SHA-256. Runs in a Ray worker, or anywhere."""
    volume = pinhole.Volume(hu, affine_lps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinholeWarning)
        images = pinhole.drr(volume, poses=poses, size=size, pixel_mm=pixel_mm, method=method)
    folder = Path(out)
    names = {"images": f"images-{index:05d}.npy", "poses": f"poses-{index:05d}.npy"}
    _save_npy_atomic(folder / names["images"], np.ascontiguousarray(images, dtype=np.float32))
    _save_npy_atomic(folder / names["poses"], np.ascontiguousarray(poses, dtype=np.float64))
    return {
        **names,
        "count": int(len(poses)),
        "images_sha256": _file_sha256(str(folder / names["images"])),
        "poses_sha256": _file_sha256(str(folder / names["poses"])),
    }


def _prepare_dataset_folder(out: Path) -> List[Path]:
    """Creates ``out``; refuses a folder holding anything but a previous dataset, whose
    shard files are returned (removed once the new manifest is in place)."""
    out.mkdir(parents=True, exist_ok=True)
    previous = []
    for entry in sorted(out.iterdir()):
        if _SHARD_NAME.match(entry.name):
            previous.append(entry)
        elif entry.name != "manifest.json" and not _is_temporary(entry.name):
            raise PinholeError(
                f"{out}: not empty and not a Pinhole DRR dataset ({entry.name}); "
                "give an empty or new folder"
            )
    _remove_temporaries(out)
    return previous


def _check_dataset_parameters(n: int, size: int, shard_size: int, method: str) -> None:
    for name, value in (("n", n), ("size", size), ("shard_size", shard_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PinholeError(f"{name} must be an integer >= 1, got {value!r}")
    if method not in DRR_METHODS:
        raise PinholeError(f"method {method!r}: expected one of {', '.join(DRR_METHODS)}")


def _gather_shards(ray: Any, refs: Sequence[Any]) -> List[dict]:
    """The shards' results in order; a failed shard raises :class:`PinholeError`."""
    shards = []
    for index, ref in enumerate(refs):
        try:
            shards.append(ray.get(ref))
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            raise PinholeError(f"DRR shard {index}: {_describe(cause)}") from exc
    return shards


def drr_dataset(
    ct: PathLike,
    out: PathLike,
    *,
    n: int,
    seed: int = 0,
    lao_range_deg: Tuple[float, float] = (-30.0, 30.0),
    cran_range_deg: Tuple[float, float] = (-15.0, 15.0),
    translation_sd_mm: float = 5.0,
    size: int = 128,
    pixel_mm: Optional[float] = None,
    shard_size: int = 64,
    method: str = "auto",
    ray_address: Optional[str] = None,
) -> dict:
    """``n`` DRRs of ``ct`` for random C-arm poses, rendered on Ray (one task per shard
    of ``shard_size``); returns the manifest written to ``out/manifest.json``.

    Poses: LAO uniform in ``lao_range_deg``, CRAN uniform in ``cran_range_deg``, a
    translation normal (mean 0, ``translation_sd_mm``) per LPS axis, drawn from
    ``numpy.random.default_rng(seed)`` (see :class:`PoseDistribution`). Each pose is
    the ``(4, 4)`` rigid LPS transform CT -> C-arm room of :func:`pose_matrix` (the
    angles are carried by the pose; the DRR is rendered with ``lao = cran = 0``), so
    ``pinhole.drr(ct, poses=poses, size=..., pixel_mm=...)`` reproduces the images.

    Files: ``images-00000.npy`` (``(count, size, size)`` float32 line integrals, row 0
    at the displayed top) and ``poses-00000.npy`` (``(count, 4, 4)`` float64), plain
    ``.npy`` for ``numpy.load(path, mmap_mode="r")``; each written atomically. The same
    inputs and seed give identical files. ``pixel_mm`` defaults to a 400 mm detector
    (``400 / size``). ``method``: as :func:`pinhole.drr`; ``"auto"`` is resolved once
    (a hardware GPU, else Siddon) and the manifest records the renderer used."""
    _check_dataset_parameters(n, size, shard_size, method)
    if method == "auto":
        # Resolved once here, so that every shard uses the same renderer and the
        # manifest names it.
        method = "gpu" if pinhole.gpu_adapter() is not None else "siddon"
    pixel_mm = DETECTOR_MM / size if pixel_mm is None else float(pixel_mm)
    if not (math.isfinite(pixel_mm) and pixel_mm > 0):
        raise PinholeError(f"pixel_mm must be finite and > 0, got {pixel_mm}")
    distribution = PoseDistribution(
        (float(lao_range_deg[0]), float(lao_range_deg[1])),
        (float(cran_range_deg[0]), float(cran_range_deg[1])),
        float(translation_sd_mm),
    )
    distribution.check()
    volume = pinhole.load(ct)
    center = volume.index_to_lps((np.asarray(volume.shape, dtype=np.float64) - 1.0) / 2.0)
    lao, cran, translation = distribution.sample(n, seed)
    poses = np.stack([pose_matrix(a, c, t, center) for a, c, t in zip(lao, cran, translation)])
    out_path = Path(out)
    previous = _prepare_dataset_folder(out_path)

    notes: List[str] = []
    with _ray_session(ray_address, None, notes) as ray:
        task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(render_shard)
        hu_ref = ray.put(volume.array)
        refs = [
            task.remote(hu_ref, volume.affine, poses[first:first + shard_size], index,
                        str(out_path), size, float(pixel_mm), method)
            for index, first in enumerate(range(0, n, shard_size))
        ]
        shards = _gather_shards(ray, refs)
    for index, shard in enumerate(shards):
        shard["first"] = index * shard_size

    manifest = _dataset_manifest(ct, volume, center, shards, distribution, seed,
                                 size, float(pixel_mm), method, n)
    manifest["warnings"] = notes
    _write_json_atomic(out_path / "manifest.json", manifest)
    current = {name for shard in shards for name in (shard["images"], shard["poses"])}
    for stale in previous:
        if stale.name not in current:
            stale.unlink()
    return manifest


def _dataset_manifest(
    ct: PathLike,
    volume: "pinhole.Volume",
    center_lps: np.ndarray,
    shards: List[dict],
    distribution: PoseDistribution,
    seed: int,
    size: int,
    pixel_mm: float,
    method: str,
    n: int,
) -> dict:
    ct_path = Path(ct).resolve()
    return {
        "format": "pinhole-drr-dataset",
        "format_version": 1,
        "pinhole_version": pinhole.__version__,
        "disclaimer": pinhole.DISCLAIMER,
        "n": n,
        "shards": shards,
        "image_shape": [size, size],
        "images_dtype": "float32",
        "poses_dtype": "float64",
        "units": "line integrals of the linear attenuation coefficient: sum of mu [1/mm] x "
        "length [mm] along each ray (dimensionless), as `pinhole drr --out-raw`",
        "image_layout": "images[k, row, column]; row 0 at the displayed top",
        "pose": {
            "meaning": "rigid 4x4 row-major LPS transform CT -> C-arm room (pose.json's "
            "matrix_lps); the C-arm stays at LAO 0 / CRAN 0 and the pose carries the angles",
            "construction": "T(t) @ T(c) @ R.T @ T(-c), R = Rz(lao) @ Rx(-cran) (LAO about "
            "the patient's S axis, detector to the patient's left; CRAN about the L axis, "
            "detector towards the head), c = the CT centre, t = the sampled translation",
            "reproduce": "pinhole.drr(pinhole.load(ct), poses=poses, lao=0, cran=0, "
            "size=image_shape[0], pixel_mm=geometry.pixel_mm, method=geometry.method)",
        },
        "sampling": distribution.describe(seed),
        "geometry": {
            "size_px": size,
            "pixel_mm": pixel_mm,
            "sid_mm": 1020.0,
            "sod_mm": 850.0,
            "source_anterior": False,
            "isocenter_lps": [float(v) for v in center_lps],
            "method": method,
            "gpu_adapter": pinhole.gpu_adapter() if method == "gpu" else None,
        },
        "ct": {
            "path": str(ct_path),
            "sha256": _file_sha256(str(ct_path)) if ct_path.is_file() else None,
            "shape": list(volume.shape),
            "spacing_mm": list(volume.spacing_mm),
        },
    }


__all__ += ["PoseDistribution", "carm_rotation", "counts", "plan_case", "pose_matrix",
            "render_shard", "summary_row"]