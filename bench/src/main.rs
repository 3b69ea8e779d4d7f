//! Benchmark driver: times Pinhole's foundation operations and prints JSON, so that
//! `bench/foundation.py` can compare them with nibabel, pydicom and scipy in one run.
//!
//! Usage: `pinhole-bench load PATH [REPEATS]`, `pinhole-bench edt LABELS [REPEATS]`.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use pinhole_io::open::{read_volume, ReadOptions};

fn best_of<T>(
    repeats: usize,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<(f64, T)> {
    let mut best = f64::INFINITY;
    let mut last = None;
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let value = f()?;
        best = best.min(start.elapsed().as_secs_f64());
        last = Some(value);
    }
    Ok((best, last.context("no run")?))
}

fn load(path: &Path) -> anyhow::Result<pinhole_io::AnyVolume> {
    Ok(read_volume(path, &ReadOptions::default(), &mut |_, _| {})?.volume)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let repeats = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(5);
    match args.first().map(String::as_str) {
        Some("load") => {
            let path = Path::new(args.get(1).context("load PATH")?);
            let (seconds, volume) = best_of(repeats, || load(path))?;
            let out = serde_json::json!({
                "op": "load", "path": path, "seconds": seconds,
                "voxels": volume.grid().voxel_count(), "threads": rayon_threads(),
            });
            println!("{out}");
        }
        Some("edt") => {
            let path = Path::new(args.get(1).context("edt LABELS")?);
            let labels = load(path)?.to_labels().context("not a label map")?;
            let mask = labels.map(|l| l != 0);
            let (seconds, distance) = best_of(repeats, || Ok(pinhole_volume::distance_to(&mask)))?;
            let max = distance.data().iter().copied().fold(0.0f32, f32::max);
            let out = serde_json::json!({
                "op": "edt", "path": path, "seconds": seconds,
                "voxels": mask.grid().voxel_count(), "max_mm": max, "threads": rayon_threads(),
            });
            println!("{out}");
        }
        _ => bail!("usage: pinhole-bench load PATH [REPEATS] | edt LABELS [REPEATS]"),
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
