//! Benchmark driver: times Pinhole's foundation operations and prints JSON, so that
//! `bench/foundation.py` can compare them with nibabel, pydicom and scipy in one run.
//!
//! Usage: `pinhole-bench load PATH [REPEATS]`, `pinhole-bench edt LABELS [REPEATS]`,
//! `pinhole-bench drr CT SIZE INTEGRATOR [REPEATS] [--source-anterior] [--out RAW]`
//! (`INTEGRATOR`: `trilinear500` (any sample count), `siddon` or `step:MM`; the detector
//! keeps the default 400 mm field, `SIZE`² pixels; default C-arm otherwise; `--out`
//! writes the line integrals as raw little-endian f32, row 0 the displayed top),
//! `pinhole-bench needle CT LABELS CSV PROCEDURE TARGET [REPEATS] [CANDIDATES]` (see
//! `needle.rs`),
//! `pinhole-bench ablation N SECONDS [--damage] [--tissue-physics] [--steps-per-sweep S] [--out RAW]` (Pennes solver on an N³ liver
//! grid at 1 mm, 5 W in a 3 mm sphere at the centre, `--out` writes the final temperature
//! as raw f32, i fastest).

mod needle;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_xray::{render, Attenuation, CArm, Detector, Integrator};

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
    if args.first().map(String::as_str) == Some("ablation") {
        return ablation(&args[1..]);
    }
    let repeats = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(5);
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
        Some("drr") => drr(&args[1..])?,
        Some("needle") => needle::run(&args[1..])?,
        Some("us-reslice") => us_reslice(&args[1..])?,
        Some("jpegls") => jpegls(&args[1..])?,
        _ => bail!(
            "usage: pinhole-bench load PATH [REPEATS] | edt LABELS [REPEATS] | \
             drr CT SIZE INTEGRATOR [REPEATS] [--source-anterior] [--out RAW] | \
             ablation N SECONDS [--damage] [--tissue-physics] [--steps-per-sweep S] [--out RAW] | \
             us-reslice CT LABELS PLANES_JSON [REPEATS] | jpegls FOLDER [REPEATS]"
        ),
    }
    Ok(())
}

/// Decodes every `*.jls` codestream in FOLDER (one thread, in name order); the best of
/// REPEATS passes over all of them, and the sum of their samples (outside the timing; to
/// compare with a peer's decoding).
fn jpegls(args: &[String]) -> anyhow::Result<()> {
    let folder = Path::new(args.first().context("jpegls FOLDER")?);
    let repeats = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let mut files: Vec<_> = std::fs::read_dir(folder)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jls"))
        .collect();
    files.sort();
    let streams = files
        .iter()
        .map(std::fs::read)
        .collect::<Result<Vec<_>, _>>()?;
    let (seconds, sum) = best_of(repeats, || {
        let mut sum = 0u64;
        for stream in &streams {
            let image =
                pinhole_io::dicom::jpegls::decode(stream, 1 << 26).map_err(anyhow::Error::msg)?;
            sum += image.samples.iter().map(|&v| u64::from(v)).sum::<u64>();
        }
        Ok(sum)
    })?;
    let out = serde_json::json!({
        "op": "jpegls", "folder": folder, "files": streams.len(), "seconds": seconds,
        "sample_sum": sum,
    });
    println!("{out}");
    Ok(())
}

fn parse_integrator(text: &str) -> anyhow::Result<Integrator> {
    if text == "siddon" {
        return Ok(Integrator::Siddon);
    }
    if let Some(n) = text.strip_prefix("trilinear") {
        return Ok(Integrator::TrilinearSamples(
            n.parse().context("trilinearN")?,
        ));
    }
    if let Some(mm) = text.strip_prefix("step:") {
        return Ok(Integrator::TrilinearStep {
            step_mm: mm.parse().context("step:MM")?,
        });
    }
    bail!("integrator must be trilinearN, siddon or step:MM, got {text}")
}

/// `us-reslice CT LABELS PLANES_JSON [REPEATS]`: each plane of PLANES_JSON (a list of
/// `{"image_to_lps": 4×4, "width": W, "height": H}`, as `tests/py/ultrasound_reference.py`
/// reads them) resliced from the CT alone (trilinear) and from the CT + labels (one
/// pass), into reused buffers; best of REPEATS after one warm-up run. Prints JSON.
fn us_reslice(args: &[String]) -> anyhow::Result<()> {
    let [ct, labels, planes, rest @ ..] = args else {
        bail!("us-reslice CT LABELS PLANES_JSON [REPEATS]");
    };
    let repeats = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(20);
    let ct = load(Path::new(ct))?.to_f32();
    let labels = load(Path::new(labels))?
        .to_labels()
        .context("not a label map")?;
    let planes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(planes)?)?;
    let mut results = Vec::new();
    for p in planes.as_array().context("PLANES_JSON: a list")? {
        let m: pinhole_volume::math::Mat4 = serde_json::from_value(p["image_to_lps"].clone())?;
        let width = p["width"].as_u64().context("width")? as usize;
        let height = p["height"].as_u64().context("height")? as usize;
        let plane = pinhole_ultrasound::ImagePlane::new(m, width, height)?;
        let mut hu = vec![0f32; plane.pixel_count()];
        let mut ids = vec![0u16; plane.pixel_count()];
        pinhole_ultrasound::reslice_ct_into(&ct, &plane, -1000.0, &mut hu)?;
        let (ct_s, ()) = best_of(repeats, || {
            Ok(pinhole_ultrasound::reslice_ct_into(
                &ct, &plane, -1000.0, &mut hu,
            )?)
        })?;
        let (both_s, ()) = best_of(repeats, || {
            Ok(pinhole_ultrasound::reslice_both_into(
                &ct, &labels, &plane, -1000.0, &mut hu, &mut ids,
            )?)
        })?;
        results.push(serde_json::json!({ "ct_seconds": ct_s, "ct_and_labels_seconds": both_s }));
    }
    println!(
        "{}",
        serde_json::json!({ "op": "us-reslice", "planes": results, "threads": rayon_threads() })
    );
    Ok(())
}

fn drr(args: &[String]) -> anyhow::Result<()> {
    let mut positional = vec![];
    let (mut source_anterior, mut out) = (false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--source-anterior" => source_anterior = true,
            "--out" => out = Some(it.next().context("--out RAW")?.clone()),
            _ => positional.push(a.as_str()),
        }
    }
    let [path, size, integrator, rest @ ..] = positional.as_slice() else {
        bail!("drr CT SIZE INTEGRATOR [REPEATS]");
    };
    let size: usize = size.parse().context("SIZE")?;
    let integrator = parse_integrator(integrator)?;
    let repeats = rest.first().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let ct = load(Path::new(path))?.to_f32();
    let mu = Attenuation::default().mu_volume(&ct);
    let mut carm = CArm::new(mu.grid().center_lps());
    carm.source_anterior = source_anterior;
    carm.detector = Detector {
        width: size,
        height: size,
        pixel_mm: 400.0 / size as f64,
    };
    let projection = carm.projection()?;
    // CPU time (all threads) per render, best of the repeats: robust to other load.
    let mut cpu_seconds = f64::INFINITY;
    let (seconds, image) = best_of(repeats, || {
        let before = process_cpu_seconds();
        let image = render(&mu, &projection, integrator);
        if let (Some(a), Some(b)) = (before, process_cpu_seconds()) {
            cpu_seconds = cpu_seconds.min(b - a);
        }
        Ok(image)
    })?;
    if let Some(out) = &out {
        let bytes: Vec<u8> = image.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(out, bytes).with_context(|| format!("writing {out}"))?;
    }
    let sum: f64 = image.data.iter().map(|&v| f64::from(v)).sum();
    let json = serde_json::json!({
        "op": "drr", "path": path, "size": size, "integrator": format!("{integrator:?}"),
        "seconds": seconds, "cpu_seconds": cpu_seconds.is_finite().then_some(cpu_seconds),
        "mean_line_integral": sum / image.data.len() as f64,
        "threads": rayon::current_num_threads(),
    });
    println!("{json}");
    Ok(())
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 10 ms ticks).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the whole line (utime, stime) are 11 and 12 after the name.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pennes solver timing: N³ homogeneous liver at 1 mm, 5 W uniform in a 3 mm sphere.
fn ablation(args: &[String]) -> anyhow::Result<()> {
    use pinhole_ablation::bioheat::{solve, Problem, Settings, Source, Tissue};
    let n: usize = args.first().context("ablation N SECONDS")?.parse()?;
    let seconds: f64 = args.get(1).context("ablation N SECONDS")?.parse()?;
    let damage = args.iter().any(|a| a == "--damage");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1));
    let o = -(n as f64 - 1.0) / 2.0;
    let grid = pinhole_volume::Grid::axis_aligned([n; 3], [1.0; 3], [o; 3])?;
    let mut problem = Problem::homogeneous(grid, Tissue::liver());
    problem.sources.push(Source::UniformSphere {
        center_lps: [0.0; 3],
        radius_mm: 3.0,
        power_w: 5.0,
    });
    // Linear Pennes: the NumPy reference (bench/ablation.py) has no tissue physics.
    let mut settings = Settings {
        duration_s: seconds,
        damage,
        physics: pinhole_ablation::physics::Physics::LINEAR,
        ..Settings::default()
    };
    if args.iter().any(|a| a == "--tissue-physics") {
        settings.physics = pinhole_ablation::physics::Physics::TISSUE;
    }
    if let Some(i) = args.iter().position(|a| a == "--steps-per-sweep") {
        settings.steps_per_sweep = args.get(i + 1).context("--steps-per-sweep N")?.parse()?;
    }
    let start = Instant::now();
    let solution = solve(&problem, &settings)?;
    let wall = start.elapsed().as_secs_f64();
    if let Some(path) = out {
        let bytes: Vec<u8> = solution
            .temperature_c
            .data()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(path, bytes).with_context(|| format!("writing {path}"))?;
    }
    let updates = (n * n * n * solution.steps) as f64;
    let out = serde_json::json!({
        "op": "ablation", "n": n, "simulated_s": solution.simulated_s, "dt_s": solution.dt_s,
        "steps": solution.steps, "damage": damage, "seconds": wall,
        "stepping_s": solution.stepping_s,
        "voxel_updates_per_s": updates / solution.stepping_s,
        "voxel_updates_per_s_incl_setup": updates / wall,
        "max_temperature_c": solution.max_temperature_c,
        "threads": rayon_threads(),
    });
    println!("{out}");
    Ok(())
}
