"""``python -m pinhole cohort ...``: cohorts on Ray from the command line.

NOT FOR CLINICAL USE.

    python -m pinhole cohort run MANIFEST --procedure P --out DIR [--ray-address A]
        [--num-cpus N] [--candidates N] [--top N] [--max-retries N] [--no-progress]
    python -m pinhole cohort drr --ct CT --out DIR --n N [--seed S] [--size PX]
        [--pixel-mm MM] [--shard-size N] [--lao-range-deg LO HI]
        [--cran-range-deg LO HI] [--translation-sd-mm MM] [--method M] [--ray-address A]

Exit status: 0 when the cohort ran (failed cases included: the counts are printed),
2 when the input was refused (``error: <message>`` on stderr).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Optional, Sequence

from . import PinholeError, PinholeWarning

EXIT_OK = 0
EXIT_REFUSED = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pinhole",
        description="Pinhole cohorts on Ray. NOT FOR CLINICAL USE.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cohort = commands.add_parser("cohort", help="many cases or many DRRs, one Ray task each")
    actions = cohort.add_subparsers(dest="action", required=True)
    _add_run(actions)
    _add_drr(actions)
    return parser


def _add_run(actions: "argparse._SubParsersAction") -> None:
    run = actions.add_parser(
        "run",
        help="plan a needle for every manifest row",
        description="Plans a needle per row of MANIFEST (CSV: case,ct,labels,target"
        "[,labels_table][,procedure]) into OUT/cases/<case>/, with OUT/summary.csv, "
        "OUT/summary.parquet and OUT/cohort.json. Unchanged, finished cases are skipped.",
    )
    run.add_argument("manifest", help="the cohort CSV")
    run.add_argument("--procedure", help="profile for rows without a procedure cell "
                     "(kidney-biopsy, liver-biopsy, ...)")
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--ray-address", help="an existing Ray cluster (default: local Ray)")
    run.add_argument("--num-cpus", type=int, help="CPUs of the local Ray instance")
    run.add_argument("--candidates", type=int, default=40_000, help="directions per case")
    run.add_argument("--top", type=int, default=5, help="paths per case")
    run.add_argument("--max-retries", type=int, default=3,
                     help="retries of a case whose worker or node was lost")
    run.add_argument("--no-progress", action="store_true", help="no progress output")


def _add_drr(actions: "argparse._SubParsersAction") -> None:
    drr = actions.add_parser(
        "drr",
        help="a DRR training set for random C-arm poses",
        description="Renders N DRRs of CT for poses drawn uniformly in LAO/CRAN and with a "
        "normal translation per LPS axis, into images-#####.npy / poses-#####.npy shards "
        "and OUT/manifest.json.",
    )
    drr.add_argument("--ct", required=True, help="the CT (NIfTI, NRRD or DICOM folder)")
    drr.add_argument("--out", required=True, help="output folder (new, empty or a dataset)")
    drr.add_argument("--n", type=int, required=True, help="number of DRRs")
    drr.add_argument("--seed", type=int, default=0)
    drr.add_argument("--size", type=int, default=128, help="pixels per side")
    drr.add_argument("--pixel-mm", type=float, help="detector pixel (default: 400 mm / size)")
    drr.add_argument("--shard-size", type=int, default=64, help="DRRs per shard (Ray task)")
    drr.add_argument("--lao-range-deg", type=float, nargs=2, default=(-30.0, 30.0),
                     metavar=("LO", "HI"))
    drr.add_argument("--cran-range-deg", type=float, nargs=2, default=(-15.0, 15.0),
                     metavar=("LO", "HI"))
    drr.add_argument("--translation-sd-mm", type=float, default=5.0)
    drr.add_argument("--method", default="auto", choices=("auto", "siddon", "trilinear", "gpu"),
                     help="auto: a hardware GPU when there is one, else siddon (default)")
    drr.add_argument("--ray-address", help="an existing Ray cluster (default: local Ray)")


def _cohort_run(args: argparse.Namespace) -> int:
    from . import cohort

    with warnings.catch_warnings(record=True) as issued:
        warnings.simplefilter("always", PinholeWarning)
        rows = cohort.run(
            args.manifest,
            args.procedure,
            args.out,
            ray_address=args.ray_address,
            num_cpus=args.num_cpus,
            candidates=args.candidates,
            top=args.top,
            progress=not args.no_progress,
            max_retries=args.max_retries,
        )
    for warning in issued:
        if issubclass(warning.category, PinholeWarning):
            print(f"warning: {warning.message}", file=sys.stderr)
    counts = cohort.counts(rows)
    print(", ".join(f"{key} {value}" for key, value in counts.items()))
    for row in rows:
        if row["status"] == "failed":
            print(f"failed {row['case']}: {row['error']}")
    print(f"summary: {args.out}/summary.csv")
    return EXIT_OK


def _cohort_drr(args: argparse.Namespace) -> int:
    from . import cohort

    manifest = cohort.drr_dataset(
        args.ct,
        args.out,
        n=args.n,
        seed=args.seed,
        lao_range_deg=tuple(args.lao_range_deg),
        cran_range_deg=tuple(args.cran_range_deg),
        translation_sd_mm=args.translation_sd_mm,
        size=args.size,
        pixel_mm=args.pixel_mm,
        shard_size=args.shard_size,
        method=args.method,
        ray_address=args.ray_address,
    )
    print(f"{manifest['n']} DRRs in {len(manifest['shards'])} shard(s): "
          f"{args.out}/manifest.json")
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(None if argv is None else list(argv))

    try:
        if args.action == "run":
            return _cohort_run(args)
        return _cohort_drr(args)
    except PinholeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED


if __name__ == "__main__":
    sys.exit(main())
