#!/usr/bin/env python3
"""nanodrr on the H100, timed in the same device call as drr-gpu-bench (a pinhole-bench
binary, bench/src/bin/drr-gpu-bench.rs; see BENCHMARKS.md).

Geometry = Pinhole's `--source-anterior` defaults: isocentre at the volume centre, source
850 mm anterior, detector at 1020 mm, 400 mm square detector (0.78125 mm at 512²), 500
samples. Prints JSON: single-call wall (median of 50, synchronised) and CUDA-event kernel
time for 200² and 512², and batch-32 per-DRR time, for each backend available.
"""
import json
import statistics
import sys
import time

import torch
from nanodrr.camera import make_rt_inv
from nanodrr.data import Subject
from nanodrr.drr import DRR


def timed(fn, iters=50, warmup=5):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    walls, kernels = [], []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t = time.perf_counter()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        walls.append((time.perf_counter() - t) * 1e3)
        kernels.append(start.elapsed_time(end))
    return statistics.median(walls), statistics.median(kernels)


def main():
    ct = sys.argv[1]
    torch.set_grad_enabled(False)
    dev = torch.device("cuda")
    subject = Subject.from_filepath(ct).to(dev)
    out = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "runs": []}
    for backend in ["triton", "torch"]:
        for size in [200, 512]:
            drr = DRR.from_carm_intrinsics(sdd=1020.0, delx=400.0 / size, dely=400.0 / size,
                                           x0=0.0, y0=0.0, height=size, width=size).to(dev)
            one = make_rt_inv(torch.zeros(1, 3), torch.tensor([[0.0, 850.0, 0.0]]), orientation="AP",
                              isocenter=subject.isocenter.cpu()).to(dev)
            rot = torch.randn(32, 3) * 5.0
            many = make_rt_inv(rot, torch.tensor([[0.0, 850.0, 0.0]]).repeat(32, 1), orientation="AP",
                               isocenter=subject.isocenter.cpu()).to(dev)
            try:
                wall, kern = timed(lambda: drr(subject, one, n_samples=500, backend=backend))
                bwall, bkern = timed(lambda: drr(subject, many, n_samples=500, backend=backend), iters=10)
            except Exception as e:  # a backend may be unavailable
                out["runs"].append({"backend": backend, "size": size, "error": repr(e)})
                continue
            out["runs"].append({"backend": backend, "size": size, "single_wall_ms": wall,
                                "single_kernel_ms": kern, "batch32_wall_ms": bwall,
                                "batch32_per_drr_ms": bwall / 32, "batch32_drr_per_s": 32e3 / bwall})
            print(json.dumps(out["runs"][-1]), file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
