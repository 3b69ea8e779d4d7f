//! Simulated-ground-truth study of `pinhole-register` (issue 8 acceptance): X-rays of the
//! CT at random poses (rotations ±10°, translations ±20 mm from the frontal view), another
//! HU→μ model and Poisson noise; registration from the nominal pose; mTRE over the label
//! centroids. Prints one JSON line per case on stderr and a JSON summary on stdout.
//!
//! ```text
//! register-study --ct CT --labels LABELS [--cases 50] [--seed 1] [--size 256]
//!     [--pixel-mm 1.5625] [--similarity gradient-ncc] [--levels-mm 8,4,2] [--gpu]
//!     [--start-offset DEG,MM]   (start that far from the truth instead of the nominal pose)
//!     [--schedule BIN/cmaes/SIGMA/POP/GEN|BIN/gn/ITER/STEP,...] [--tolerance UNITS]
//! ```
//! `--gpu` needs the `gpu` feature (`cargo build --release -p pinhole-bench --features gpu
//! --bin register-study`).

use std::path::PathBuf;
use std::time::Instant;

use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_register::cmaes::Rng;
use pinhole_register::simulate::{
    label_centroids, mean_projection_distance_mm, mtre, random_pose, simulate_xray, XrayModel,
};
use pinhole_register::volume_prep::mu_pyramid;
use pinhole_register::{
    default_levels, register, CpuRenderer, LevelSpec, Pose, Renderer, Search, Settings, Similarity,
    DEFAULT_LEVELS_MM,
};
use pinhole_xray::{Attenuation, CArm, Detector};

struct Args {
    ct: PathBuf,
    labels: PathBuf,
    cases: usize,
    seed: u64,
    size: usize,
    pixel_mm: f64,
    similarity: Similarity,
    levels_mm: Vec<f64>,
    gpu: bool,
    rotation_deg: f64,
    translation_mm: f64,
    /// Start this far from the truth (Euler-angle vector norm in degrees, translation in
    /// mm), in a random direction per case; `None`: from the nominal pose.
    start_offset: Option<(f64, f64)>,
    /// Per level `BIN/SIGMA/POPULATION/GENERATIONS` (coarse first); `None`: the defaults.
    schedule: Option<Vec<LevelSpec>>,
    tolerance_units: Option<f64>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        ct: PathBuf::new(),
        labels: PathBuf::new(),
        cases: 50,
        seed: 1,
        size: 256,
        pixel_mm: 1.5625,
        similarity: Similarity::GradientNcc,
        levels_mm: DEFAULT_LEVELS_MM.to_vec(),
        gpu: false,
        rotation_deg: 10.0,
        translation_mm: 20.0,
        start_offset: None,
        schedule: None,
        tolerance_units: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--ct" => a.ct = value()?.into(),
            "--labels" => a.labels = value()?.into(),
            "--cases" => a.cases = num(value()?)? as usize,
            "--seed" => a.seed = num(value()?)? as u64,
            "--size" => a.size = num(value()?)? as usize,
            "--pixel-mm" => a.pixel_mm = num(value()?)?,
            "--rotation-deg" => a.rotation_deg = num(value()?)?,
            "--translation-mm" => a.translation_mm = num(value()?)?,
            "--similarity" => {
                let v = value()?;
                a.similarity = Similarity::parse(&v).ok_or(format!("unknown similarity {v}"))?;
            }
            "--levels-mm" => {
                a.levels_mm = value()?
                    .split(',')
                    .map(|t| {
                        t.trim()
                            .parse::<f64>()
                            .map_err(|e| format!("--levels-mm: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--gpu" => a.gpu = true,
            "--start-offset" => {
                let v = value()?;
                let (deg, mm) = v
                    .split_once(',')
                    .ok_or_else(|| format!("--start-offset DEG,MM, got {v}"))?;
                a.start_offset = Some((num(deg.to_owned())?, num(mm.to_owned())?));
            }
            "--schedule" => a.schedule = Some(parse_schedule(&value()?)?),
            "--tolerance" => a.tolerance_units = Some(num(value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.ct.as_os_str().is_empty() || a.labels.as_os_str().is_empty() {
        return Err("usage: register-study --ct CT --labels LABELS [--cases N] ...".into());
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let t_load = Instant::now();
    let ct = read_volume(&args.ct, &ReadOptions::default(), &mut |_, _| {})?
        .volume
        .to_f32();
    let labels = read_volume(&args.labels, &ReadOptions::default(), &mut |_, _| {})?
        .volume
        .to_labels()
        .ok_or("--labels is not a label map")?;
    let centroids: Vec<[f64; 3]> = label_centroids(&labels, 100)
        .into_iter()
        .map(|c| c.1)
        .collect();
    let pyramid = mu_pyramid(&ct, &Attenuation::default(), None, &args.levels_mm)?;
    let sim_model = XrayModel::default();
    let sim_mu = sim_model.mu_volume(&ct);
    let load_s = t_load.elapsed().as_secs_f64();

    let renderers: Vec<Box<dyn Renderer>> = if args.gpu {
        gpu_renderers(&pyramid)?
    } else {
        pyramid
            .into_iter()
            .map(|mu| Box::new(CpuRenderer::new(mu, None)) as Box<dyn Renderer>)
            .collect()
    };
    let mut carm = CArm::new(ct.grid().center_lps());
    carm.detector = Detector {
        width: args.size,
        height: args.size,
        pixel_mm: args.pixel_mm,
    };
    let specs = match &args.schedule {
        Some(s) if s.len() != renderers.len() => {
            return Err(format!(
                "--schedule has {} levels but --levels-mm {}",
                s.len(),
                renderers.len()
            )
            .into())
        }
        Some(s) => s.clone(),
        None => default_levels(&args.levels_mm, carm.pixel_at_isocenter_mm()),
    };
    let levels: Vec<(&dyn Renderer, LevelSpec)> =
        renderers.iter().map(|r| r.as_ref()).zip(specs).collect();
    for (r, s) in &levels {
        eprintln!(
            "level: bin {} {:?} {}",
            s.detector_bin,
            s.search,
            r.describe()
        );
    }
    let nominal = carm.projection()?;
    let center = carm.isocenter_lps;
    let defaults = Settings::default();
    let settings = Settings {
        similarity: args.similarity,
        tolerance_units: args.tolerance_units.unwrap_or(defaults.tolerance_units),
        ..defaults
    };
    let mut rng = Rng::new(args.seed);
    // Its own stream, so that the truths are those of the study from the nominal pose.
    let mut start_rng = Rng::new(args.seed.wrapping_add(1_000_003));
    let mut rows = Vec::new();
    for case in 0..args.cases {
        let truth = random_pose(&mut rng, center, args.rotation_deg, args.translation_mm);
        let xray = simulate_xray(
            &sim_mu,
            &nominal,
            &truth,
            &sim_model,
            1.0,
            args.seed + case as u64,
        )?;
        let start = match args.start_offset {
            Some((deg, mm)) => offset_pose(&truth, deg, mm, &mut start_rng),
            None => Pose::identity(center),
        };
        let reg = register(&xray, &nominal, &start, &levels, &settings)?;
        let err = mtre(&reg.pose, &truth, &centroids);
        let level_mtre: Vec<f64> = reg
            .levels
            .iter()
            .map(|l| mtre(&Pose::from_params(&l.params, center), &truth, &centroids))
            .collect();
        let start_err = mtre(&start, &truth, &centroids);
        let proj = mean_projection_distance_mm(&reg.pose, &truth, &nominal, &centroids);
        let row = serde_json::json!({
            "case": case,
            "truth": truth.params(),
            "found": reg.pose.params(),
            "mtre_mm": err,
            "start_mtre_mm": start_err,
            "level_mtre_mm": level_mtre,
            "mean_projection_distance_mm": proj,
            "similarity": reg.similarity,
            "polarity": reg.polarity,
            "drrs": reg.drrs_rendered,
            "seconds": reg.seconds,
            "drrs_per_second": reg.drrs_per_second(),
            "levels": reg.levels,
        });
        eprintln!("{row}");
        rows.push((
            err,
            reg.seconds,
            reg.drrs_rendered,
            start_err,
            proj.unwrap_or(f64::NAN),
        ));
    }
    let mut errs: Vec<f64> = rows.iter().map(|r| r.0).collect();
    errs.sort_by(f64::total_cmp);
    let n = errs.len().max(1) as f64;
    let median = if errs.is_empty() {
        f64::NAN
    } else if errs.len() % 2 == 1 {
        errs[errs.len() / 2]
    } else {
        0.5 * (errs[errs.len() / 2 - 1] + errs[errs.len() / 2])
    };
    let seconds: f64 = rows.iter().map(|r| r.1).sum();
    let drrs: usize = rows.iter().map(|r| r.2).sum();
    let summary = serde_json::json!({
        "cases": rows.len(),
        "success_rate_under_2mm": errs.iter().filter(|&&e| e < 2.0).count() as f64 / n,
        "mtre_mm": {"mean": errs.iter().sum::<f64>() / n, "median": median,
                    "max": errs.last().copied().unwrap_or(f64::NAN),
                    "p90": errs.get(((errs.len() as f64 * 0.9).ceil() as usize).saturating_sub(1)).copied()},
        "start_mtre_mm_mean": rows.iter().map(|r| r.3).sum::<f64>() / n,
        "mean_projection_distance_mm_mean": rows.iter().map(|r| r.4).sum::<f64>() / n,
        "seconds_per_registration": seconds / n,
        "drrs_per_registration": drrs as f64 / n,
        "drrs_per_second": drrs as f64 / seconds.max(1e-9),
        "setup_seconds": load_s,
        "threads": rayon::current_num_threads(),
        "renderer": if args.gpu { "gpu" } else { "cpu" },
        "start": match args.start_offset {
            Some((deg, mm)) => format!("{deg} deg and {mm} mm from the truth, random directions"),
            None => "the nominal (frontal) pose".to_owned(),
        },
        "similarity": args.similarity,
        "levels_mm": args.levels_mm,
        "schedule": levels.iter().map(|l| &l.1).collect::<Vec<_>>(),
        "tolerance_units": settings.tolerance_units,
        "xray": {"size": args.size, "pixel_mm": args.pixel_mm, "model": format!("{sim_model:?}")},
        "centroids": centroids.len(),
        "note": "Simulated ground truth. Not for clinical use.",
    });
    println!("{summary}");
    Ok(())
}

#[cfg(feature = "gpu")]
fn gpu_renderers(
    pyramid: &[pinhole_volume::Volume<f32>],
) -> Result<Vec<Box<dyn Renderer>>, Box<dyn std::error::Error>> {
    let ctx = pinhole_gpu::GpuContext::new()?;
    eprintln!("GPU: {}", ctx.adapter_info());
    Ok(pinhole_register::gpu_renderers(&ctx, pyramid)?)
}

#[cfg(not(feature = "gpu"))]
fn gpu_renderers(
    _pyramid: &[pinhole_volume::Volume<f32>],
) -> Result<Vec<Box<dyn Renderer>>, Box<dyn std::error::Error>> {
    Err(
        "--gpu needs the `gpu` feature: cargo build --release -p pinhole-bench --features gpu \
         --bin register-study"
            .into(),
    )
}

/// `4/cmaes/0.5/16/40,2/gn/8/0.01`: per level the detector bin, then `cmaes/SIGMA/
/// POPULATION/GENERATIONS` or `gn/ITERATIONS/STEP_UNITS` (Gauss–Newton).
fn parse_schedule(text: &str) -> Result<Vec<LevelSpec>, String> {
    text.split(',')
        .map(|level| {
            let f: Vec<&str> = level.split('/').collect();
            let bad = || {
                format!(
                    "--schedule: {level} is neither BIN/cmaes/SIGMA/POPULATION/GENERATIONS \
                     nor BIN/gn/ITERATIONS/STEP_UNITS"
                )
            };
            let search = match f.get(1).copied() {
                Some("cmaes") if f.len() == 5 => Search::Cmaes {
                    sigma: f[2].parse().map_err(|_| bad())?,
                    population: f[3].parse().map_err(|_| bad())?,
                    max_generations: f[4].parse().map_err(|_| bad())?,
                },
                Some("gn") if f.len() == 4 => Search::GaussNewton {
                    max_iterations: f[2].parse().map_err(|_| bad())?,
                    step_units: f[3].parse().map_err(|_| bad())?,
                },
                _ => return Err(bad()),
            };
            Ok(LevelSpec {
                detector_bin: f[0].parse().map_err(|_| bad())?,
                search,
            })
        })
        .collect()
}

/// `truth` moved by `deg` (norm of the Euler-angle change) and `mm`, each along a random
/// unit direction.
fn offset_pose(truth: &Pose, deg: f64, mm: f64, rng: &mut Rng) -> Pose {
    let mut unit = || -> [f64; 3] {
        loop {
            let v: [f64; 3] = std::array::from_fn(|_| 2.0 * rng.uniform() - 1.0);
            let n = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
            if n > 0.1 && n <= 1.0 {
                return v.map(|x| x / n);
            }
        }
    };
    let (r, t) = (unit(), unit());
    let p = truth.params();
    let moved: [f64; 6] = std::array::from_fn(|i| {
        if i < 3 {
            p[i] + deg * r[i]
        } else {
            p[i] + mm * t[i - 3]
        }
    });
    Pose::from_params(&moved, truth.center_lps)
}
