//! GPU DRR benchmark: prints one JSON object (adapter, texture format, upload time,
//! single-call wall and kernel times for 200² and 512², batch-32 throughput, and the
//! relative L2 difference from the CPU trilinear render for one 512² pose).
//!
//! `drr-gpu-bench --ct CT.nii.gz [--samples 500] [--iters 50] [--warmup 5]
//! [--batch-iters 10] [--batch 32] [--skip-cpu] [--air-thresholds 0.0005,0.001,0.002]`
//!
//! The main figures use the default (exact empty-space skipping, on when ≥ 5 % of the
//! 8³ blocks are all μ = 0); `empty_space_skipping` compares no skipping and each air threshold
//! (μ in 1/mm) on the 512² single call and batch, with the relative L2 change.
//!
//! Geometry: source anterior, SID 1020 mm, SOD 850 mm, isocentre at the volume centre;
//! 512² at 0.78125 mm, 200² at 2.0 mm (the same field of view).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use pinhole_gpu::{GpuContext, GpuDrr};
use pinhole_volume::Volume;
use pinhole_xray::{render, Attenuation, CArm, Detector, Image, Integrator, Projection};
use serde_json::{json, Value};

struct Args {
    ct: PathBuf,
    samples: usize,
    iters: usize,
    warmup: usize,
    batch_iters: usize,
    batch: usize,
    skip_cpu: bool,
    air_thresholds: Vec<f32>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        ct: PathBuf::new(),
        samples: 500,
        iters: 50,
        warmup: 5,
        batch_iters: 10,
        batch: 32,
        skip_cpu: false,
        air_thresholds: vec![0.0005, 0.001, 0.002],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--ct" => args.ct = PathBuf::from(value()?),
            "--samples" => args.samples = number(value()?)?,
            "--iters" => args.iters = number(value()?)?.max(1),
            "--warmup" => args.warmup = number(value()?)?,
            "--batch-iters" => args.batch_iters = number(value()?)?.max(1),
            "--batch" => args.batch = number(value()?)?.max(1),
            "--skip-cpu" => args.skip_cpu = true,
            "--air-thresholds" => {
                args.air_thresholds = value()?
                    .split(',')
                    .filter(|t| !t.is_empty())
                    .map(|t| t.parse::<f32>().map_err(|e| format!("{t}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.ct.as_os_str().is_empty() {
        return Err(USAGE.into());
    }
    Ok(args)
}

const USAGE: &str = "usage: drr-gpu-bench --ct CT.nii.gz [--samples 500] [--iters 50] \
                     [--warmup 5] [--batch-iters 10] [--batch 32] [--skip-cpu] \
                     [--air-thresholds 0.0005,0.001,0.002]";

fn main() -> ExitCode {
    match parse_args().and_then(|a| run(&a).map_err(|e| e.to_string())) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("drr-gpu-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn projection(mu: &Volume<f32>, size: usize, lao: f64, cran: f64) -> Projection {
    let mut c = CArm::new(mu.grid().center_lps());
    c.source_anterior = true;
    c.lao_deg = lao;
    c.cran_deg = cran;
    c.detector = Detector {
        width: size,
        height: size,
        pixel_mm: 0.78125 * 512.0 / size as f64,
    };
    // Default distances are valid and the detector is non-empty.
    c.projection().unwrap_or_else(|e| panic!("geometry: {e}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn stats(v: Vec<Duration>) -> Value {
    if v.is_empty() {
        return Value::Null;
    }
    let mut s = v.clone();
    s.sort();
    json!({
        "median_ms": ms(median(v)),
        "min_ms": ms(s[0]),
        "p90_ms": ms(s[(s.len() * 9 / 10).min(s.len() - 1)]),
        "n": s.len(),
    })
}

fn rel_l2(a: &Image, b: &Image) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.data.iter().zip(&b.data) {
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*y).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

fn run(a: &Args) -> Result<Value, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let ct = pinhole_io::nifti::read(&a.ct)?;
    let mu = Attenuation::default().mu_volume(&ct.to_f32());
    let read_s = t.elapsed().as_secs_f64();
    eprintln!(
        "read {} in {read_s:.1} s: {:?}",
        a.ct.display(),
        mu.grid().dims()
    );

    let t = Instant::now();
    let ctx = GpuContext::new()?;
    let context_ms = ms(t.elapsed());
    eprintln!("adapter: {}", ctx.adapter_info());
    let t = Instant::now();
    let mut drr = GpuDrr::new(&ctx, &mu)?;
    let upload_ms = ms(t.elapsed());
    let default_skipping = drr.empty_space_skipping();

    let single = single_calls(a, &ctx, &drr, &mu)?;
    let batch = batches(a, &ctx, &drr, &mu)?;
    let modes = skipping_modes(a, &ctx, &mut drr, &mu)?;
    drr.set_empty_space_skipping(default_skipping);
    drr.set_air_threshold(0.0);
    let accuracy = accuracy(a, &ctx, &drr, &mu)?;

    let info = ctx.info();
    Ok(json!({
        "adapter": info.name,
        "backend": format!("{:?}", info.backend),
        "device_type": format!("{:?}", info.device_type),
        "driver": format!("{} {}", info.driver, info.driver_info),
        "adapter_info": ctx.adapter_info(),
        "texture_format": ctx.volume_format_name(),
        "timestamps": ctx.has_timestamps(),
        "ct": a.ct.display().to_string(),
        "volume_dims": mu.grid().dims(),
        "spacing_mm": mu.grid().spacing_mm(),
        "samples_per_ray": a.samples,
        "context_ms": context_ms,
        "upload_ms": upload_ms,
        "empty_space_skipping_default": default_skipping,
        "empty_block_fraction_at_zero": drr.empty_block_fraction(),
        "single_call": single,
        "batch": batch,
        "empty_space_skipping": modes,
        "accuracy": accuracy,
    }))
}

fn single_calls(
    a: &Args,
    ctx: &GpuContext,
    drr: &GpuDrr,
    mu: &Volume<f32>,
) -> Result<Value, Box<dyn std::error::Error>> {
    let mut single = serde_json::Map::new();
    for size in [200usize, 512] {
        let p = projection(mu, size, 0.0, 0.0);
        for _ in 0..a.warmup {
            drr.render(&p, a.samples)?;
        }
        let mut wall = Vec::with_capacity(a.iters);
        for _ in 0..a.iters {
            let t = Instant::now();
            std::hint::black_box(drr.render(&p, a.samples)?);
            wall.push(t.elapsed());
        }
        let mut entry = json!({ "wall_incl_readback": stats(wall) });
        if ctx.has_timestamps() {
            let mut kernel = Vec::with_capacity(a.iters);
            for _ in 0..a.iters {
                if let Some(k) = drr
                    .render_batch_timed(std::slice::from_ref(&p), a.samples)?
                    .kernel
                {
                    kernel.push(k);
                }
            }
            entry["kernel"] = stats(kernel);
        }
        eprintln!("single {size}²: {entry}");
        single.insert(format!("{size}"), entry);
    }

    Ok(Value::Object(single))
}

fn batches(
    a: &Args,
    ctx: &GpuContext,
    drr: &GpuDrr,
    mu: &Volume<f32>,
) -> Result<Value, Box<dyn std::error::Error>> {
    let mut batch = serde_json::Map::new();
    for size in [512usize, 200] {
        let poses: Vec<Projection> = (0..a.batch)
            .map(|i| {
                let f = i as f64 / a.batch.max(2) as f64 - 0.5;
                projection(mu, size, 80.0 * f, 30.0 * (f * 7.0).sin())
            })
            .collect();
        drr.render_batch(&poses, a.samples)?;
        let t = Instant::now();
        for _ in 0..a.batch_iters {
            std::hint::black_box(drr.render_batch(&poses, a.samples)?);
        }
        let total = t.elapsed().as_secs_f64();
        let drrs = (a.batch * a.batch_iters) as f64;
        let mut entry = json!({
            "batch": a.batch,
            "batches": a.batch_iters,
            "drr_per_s": drrs / total,
            "ms_per_drr_incl_readback": total * 1e3 / drrs,
        });
        if ctx.has_timestamps() {
            let mut kernel = Vec::new();
            for _ in 0..a.batch_iters.min(5) {
                if let Some(k) = drr.render_batch_timed(&poses, a.samples)?.kernel {
                    kernel.push(k);
                }
            }
            let k = median(kernel);
            entry["kernel_ms_per_batch"] = json!(ms(k));
            entry["kernel_drr_per_s"] = json!(a.batch as f64 / k.as_secs_f64());
        }
        eprintln!("batch {size}²: {entry}");
        batch.insert(format!("{size}"), entry);
    }

    Ok(Value::Object(batch))
}

fn skipping_modes(
    a: &Args,
    ctx: &GpuContext,
    drr: &mut GpuDrr,
    mu: &Volume<f32>,
) -> Result<Value, Box<dyn std::error::Error>> {
    // Empty-space skipping: off, exact (threshold 0), and each air threshold.
    let p512 = projection(mu, 512, 0.0, 0.0);
    let poses512: Vec<Projection> = (0..a.batch)
        .map(|i| projection(mu, 512, 2.0 * i as f64 - a.batch as f64, 0.0))
        .collect();
    drr.set_empty_space_skipping(false);
    let reference = drr.render(&p512, a.samples)?;
    let mut modes = Vec::new();
    let mut settings = vec![(false, 0.0f32), (true, 0.0)];
    settings.extend(a.air_thresholds.iter().map(|&t| (true, t)));
    for (on, threshold) in settings {
        drr.set_empty_space_skipping(on);
        drr.set_air_threshold(threshold);
        let image = drr.render(&p512, a.samples)?;
        let mut wall = Vec::new();
        for _ in 0..a.iters.min(20) {
            let t = Instant::now();
            std::hint::black_box(drr.render(&p512, a.samples)?);
            wall.push(t.elapsed());
        }
        drr.render_batch(&poses512, a.samples)?;
        let t = Instant::now();
        for _ in 0..a.batch_iters {
            std::hint::black_box(drr.render_batch(&poses512, a.samples)?);
        }
        let drr_per_s = (a.batch * a.batch_iters) as f64 / t.elapsed().as_secs_f64();
        let mut entry = json!({
            "skipping": on,
            "air_threshold_per_mm": threshold,
            "empty_block_fraction": if on { drr.empty_block_fraction() } else { 0.0 },
            "single_512_wall_median_ms": ms(median(wall)),
            "batch_512_drr_per_s": drr_per_s,
            "rel_l2_vs_no_skipping": rel_l2(&image, &reference),
        });
        if ctx.has_timestamps() {
            let mut kernel = Vec::new();
            for _ in 0..a.iters.min(20) {
                if let Some(k) = drr
                    .render_batch_timed(std::slice::from_ref(&p512), a.samples)?
                    .kernel
                {
                    kernel.push(k);
                }
            }
            entry["single_512_kernel_median_ms"] = json!(ms(median(kernel)));
        }
        eprintln!("empty-space skipping: {entry}");
        modes.push(entry);
    }

    Ok(Value::Array(modes))
}

fn accuracy(
    a: &Args,
    _ctx: &GpuContext,
    drr: &GpuDrr,
    mu: &Volume<f32>,
) -> Result<Value, Box<dyn std::error::Error>> {
    if a.skip_cpu {
        return Ok(Value::Null);
    }
    let p = projection(mu, 512, 20.0, 10.0);
    let gpu = drr.render(&p, a.samples)?;
    let t = Instant::now();
    let cpu = render(mu, &p, Integrator::TrilinearSamples(a.samples));
    let cpu_ms = ms(t.elapsed());
    Ok(json!({
        "pose": "LAO 20 CRAN 10, source anterior, 512²",
        "rel_l2_gpu_vs_cpu_trilinear": rel_l2(&gpu, &cpu),
        "cpu_trilinear_ms": cpu_ms,
        "cpu_threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    }))
}
