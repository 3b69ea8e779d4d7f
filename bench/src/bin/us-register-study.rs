//! Simulated-ground-truth study of `pinhole_ultrasound::register` (issue #20, "Correcting
//! the fusion"): tracked sweeps simulated from the abdomen CT through the liver, each with
//! its own simulation (speckle seed, frequency, gain, dynamic range, probe geometry, a
//! grey-level gamma standing for another tissue → echo mapping, added Gaussian noise),
//! a random rigid error of up to ±10 mm and ±10° per axis applied to the tracked poses,
//! registration by LC² from the erroneous pose. TRE = distance between where the
//! recovered and the true transforms put 5 targets in the swept region (3 depths on the
//! middle frame, the centres of the first and last frames); mean and max per case.
//!
//! Everything here is simulation: the ultrasound comes from `pinhole_ultrasound::simulate`
//! on the same CT the registration uses (with other parameters and mappings).
//!
//! ```text
//! us-register-study [--ct ../shared/data/abdomen-ct/example_ct.nii.gz] [--cases 50]
//!     [--seed 1] [--frames-used 8]
//! ```
//! Prints one JSON object on stdout (per-case TRE before / after, time, LC²) and the
//! summary lines on stderr.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use pinhole_ultrasound::register::{register_sweep, UsRegisterLevel, UsRegisterOptions};
use pinhole_ultrasound::{
    sweep_poses, ImagePlane, Probe, ProbePose, SimulationParams, Simulator, SweepMotion,
};
use pinhole_volume::math::{mat4_mul, Mat4, Vec3};
use pinhole_volume::Volume;
use serde_json::{json, Value};

/// A point in the liver of the abdomen CT (LPS mm; found on axial slices 94–108, where
/// the liver fills the patient's right anterior abdomen).
const LIVER_LPS: Vec3 = [-95.0, -185.0, 375.0];
/// Draws of a sweep per case before giving up on keeping its fans inside the CT.
const MAX_DRAWS: usize = 100;
/// Largest error per axis applied to the tracked poses.
const ERROR_MM: f64 = 10.0;
const ERROR_DEG: f64 = 10.0;
/// Success threshold of the issue (mm).
const GOAL_TRE_MM: f64 = 2.0;

struct Args {
    ct: PathBuf,
    cases: usize,
    first: usize,
    seed: u64,
    frames_used: usize,
    window_hu: Option<[f32; 2]>,
    dark_below: Option<f32>,
    starts: Option<usize>,
    search_mm: Option<f64>,
    search_deg: Option<f64>,
    carried: Option<usize>,
    levels: Option<Vec<(f64, usize, f64)>>,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        ct: PathBuf::from("../shared/data/abdomen-ct/example_ct.nii.gz"),
        cases: 50,
        first: 0,
        seed: 1,
        frames_used: UsRegisterOptions::default().max_frames_used,
        window_hu: None,
        dark_below: None,
        starts: None,
        search_mm: None,
        search_deg: None,
        carried: None,
        levels: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--ct" => a.ct = PathBuf::from(value),
            "--cases" => a.cases = value.parse().context("--cases")?,
            "--first" => a.first = value.parse().context("--first")?,
            "--seed" => a.seed = value.parse().context("--seed")?,
            "--frames-used" => a.frames_used = value.parse().context("--frames-used")?,
            "--window-hu" => {
                let v: Vec<f32> = value
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--window-hu")?;
                a.window_hu = Some([v[0], v[1]]);
            }
            "--starts" => a.starts = Some(value.parse().context("--starts")?),
            "--search-deg" => a.search_deg = Some(value.parse().context("--search-deg")?),
            "--carried" => a.carried = Some(value.parse().context("--carried")?),
            "--search-mm" => a.search_mm = Some(value.parse().context("--search-mm")?),
            "--levels" => {
                let mut levels = Vec::new();
                for l in value.split(',') {
                    let v: Vec<f64> = l.split(':').map(str::parse).collect::<Result<_, _>>()?;
                    levels.push((v[0], v[1] as usize, *v.get(2).unwrap_or(&v[0])));
                }
                a.levels = Some(levels);
            }
            "--dark-below" => a.dark_below = Some(value.parse().context("--dark-below")?),
            other => bail!("unknown argument {other:?} (known: --ct --cases --seed --frames-used)"),
        }
    }
    Ok(a)
}

/// SplitMix64: deterministic per case.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box–Muller).
    fn gaussian(&mut self) -> f64 {
        let u = self.uniform(f64::MIN_POSITIVE, 1.0);
        let v = self.uniform(0.0, 1.0);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

/// Rotation (rows) of `deg` about the unit `axis` (Rodrigues).
fn rotation(axis: Vec3, deg: f64) -> [[f64; 3]; 3] {
    let (s, c) = deg.to_radians().sin_cos();
    let [x, y, z] = axis;
    let t = 1.0 - c;
    [
        [c + x * x * t, x * y * t - z * s, x * z * t + y * s],
        [y * x * t + z * s, c + y * y * t, y * z * t - x * s],
        [z * x * t - y * s, z * y * t + x * s, c + z * z * t],
    ]
}

fn mat3_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| a[r][k] * b[k][c]).sum()))
}

fn rotate(r: &[[f64; 3]; 3], v: Vec3) -> Vec3 {
    std::array::from_fn(|i| (0..3).map(|k| r[i][k] * v[k]).sum())
}

fn apply(m: &Mat4, p: Vec3) -> Vec3 {
    std::array::from_fn(|r| m[r][0] * p[0] + m[r][1] * p[1] + m[r][2] * p[2] + m[r][3])
}

fn distance(a: Vec3, b: Vec3) -> f64 {
    (0..3).map(|r| (a[r] - b[r]).powi(2)).sum::<f64>().sqrt()
}

/// `x ↦ R·(x − centre) + centre + shift`.
fn rigid_about(r: &[[f64; 3]; 3], centre: Vec3, shift: Vec3) -> Mat4 {
    let rc = rotate(r, centre);
    let mut m = [[0.0; 4]; 4];
    for a in 0..3 {
        m[a] = [r[a][0], r[a][1], r[a][2], centre[a] - rc[a] + shift[a]];
    }
    m[3][3] = 1.0;
    m
}

/// One case's sweep: true planes, pixels, and the simulation's description.
struct Sweep {
    planes: Vec<ImagePlane>,
    pixels: Vec<Vec<u8>>,
    description: Value,
}

/// The probe pressed 8 mm into the skin in front of `target`, along `-beam`.
fn probe_centre(ct: &Volume<f32>, target: Vec3, beam: Vec3) -> Vec3 {
    let at = |t: f64| std::array::from_fn(|r| target[r] - t * beam[r]);
    let mut t = 0.0;
    while t < 300.0
        && ct
            .sample_trilinear(at(t + 1.0))
            .is_some_and(|hu| hu > -300.0)
    {
        t += 1.0;
    }
    at(t - 8.0)
}

/// A sweep whose fans lie inside the CT; `None` when this draw leaves it.
fn simulate_sweep(ct: &Volume<f32>, rng: &mut Rng) -> anyhow::Result<Option<Sweep>> {
    let target = [
        LIVER_LPS[0] + rng.uniform(-15.0, 15.0),
        LIVER_LPS[1],
        LIVER_LPS[2] + rng.uniform(-10.0, 10.0),
    ];
    // Beam roughly posterior, tilted up to 10° about the patient's left–right axis and
    // 15° about the head–feet axis; the array transverse, turned up to 20° about the beam.
    let tilt = mat3_mul(
        &rotation([1.0, 0.0, 0.0], rng.uniform(-10.0, 10.0)),
        &rotation([0.0, 0.0, 1.0], rng.uniform(-15.0, 15.0)),
    );
    let beam = rotate(&tilt, [0.0, 1.0, 0.0]);
    let lateral = rotate(
        &rotation(beam, rng.uniform(-20.0, 20.0)),
        rotate(&tilt, [1.0, 0.0, 0.0]),
    );
    let start = ProbePose {
        centre_lps: probe_centre(ct, target, beam),
        beam_lps: beam,
        lateral_lps: lateral,
    };
    let frames = 9 + (rng.next_u64() % 7) as usize;
    let (motion, motion_json) = if rng.next_u64().is_multiple_of(2) {
        let step_deg = rng.uniform(1.5, 3.0);
        (
            SweepMotion::Tilt { step_deg },
            json!({"tilt_step_deg": step_deg}),
        )
    } else {
        let step_mm = rng.uniform(1.5, 3.0);
        let normal = pinhole_volume::math::cross(lateral, beam);
        (
            SweepMotion::Translate {
                direction_lps: normal,
                step_mm,
            },
            json!({"slide_step_mm": step_mm}),
        )
    };
    let size = 224 + 32 * (rng.next_u64() % 4) as usize;
    let params = SimulationParams {
        probe: Probe::Convex {
            radius_mm: rng.uniform(45.0, 65.0),
            fov_deg: rng.uniform(55.0, 75.0),
        },
        depth_mm: rng.uniform(130.0, 170.0),
        frequency_mhz: rng.uniform(2.5, 5.0),
        width_px: size,
        height_px: size,
        line_count: None,
        gain_db: rng.uniform(-6.0, 6.0),
        dynamic_range_db: rng.uniform(45.0, 75.0),
        tgc: true,
        seed: rng.next_u64(),
    };
    let gamma = rng.uniform(0.7, 1.4);
    let noise_sd = rng.uniform(0.0, 12.0);
    let sim = Simulator::new(params)?;
    let poses = sweep_poses(&start, &motion, frames)?;
    let mut planes = Vec::with_capacity(frames);
    let mut pixels = Vec::with_capacity(frames);
    for pose in &poses {
        let f = sim.simulate(ct, pose)?;
        planes.push(f.plane);
        pixels.push(f.pixels);
    }
    // The CT must hold the scanned region (the simulator takes the world outside it for
    // air: a wall of shadow no real sweep has): every 4th lit pixel inside the CT's grid.
    for (plane, p) in planes.iter().zip(&pixels) {
        let w = plane.width_px();
        let outside = p.iter().enumerate().step_by(4).any(|(o, &v)| {
            v != 0
                && ct
                    .sample_trilinear(plane.pixel_to_lps([(o % w) as f64, (o / w) as f64]))
                    .is_none()
        });
        if outside {
            return Ok(None);
        }
    }
    // The scanned region: pixels lit in some frame. Inside it, another grey-level mapping
    // and electronic noise; outside it stays 0.
    let mut fan = vec![false; size * size];
    for p in &pixels {
        for (m, &v) in fan.iter_mut().zip(p) {
            *m |= v != 0;
        }
    }
    for p in &mut pixels {
        for (v, &inside) in p.iter_mut().zip(&fan) {
            if inside {
                let mapped =
                    255.0 * (f64::from(*v) / 255.0).powf(gamma) + noise_sd * rng.gaussian();
                *v = mapped.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    let description = json!({
        "frames": frames,
        "motion": motion_json,
        "probe_centre_lps": start.centre_lps,
        "size_px": size,
        "frequency_mhz": params.frequency_mhz,
        "gain_db": params.gain_db,
        "dynamic_range_db": params.dynamic_range_db,
        "depth_mm": params.depth_mm,
        "gamma": gamma,
        "noise_sd": noise_sd,
    });
    Ok(Some(Sweep {
        planes,
        pixels,
        description,
    }))
}

/// Targets in the swept region: the middle frame's centre line at 30, 50 and 70 % of the
/// depth, the first and last frames' centres.
fn targets(planes: &[ImagePlane]) -> Vec<Vec3> {
    let mid = &planes[planes.len() / 2];
    let (w, h) = (mid.width_px() as f64, mid.height_px() as f64);
    let centre = |p: &ImagePlane| p.pixel_to_lps([0.5 * w, 0.5 * h]);
    vec![
        mid.pixel_to_lps([0.5 * w, 0.3 * h]),
        mid.pixel_to_lps([0.5 * w, 0.5 * h]),
        mid.pixel_to_lps([0.5 * w, 0.7 * h]),
        centre(&planes[0]),
        centre(&planes[planes.len() - 1]),
    ]
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let k = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[k]
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let ct = pinhole_io::nifti::read(&args.ct)
        .with_context(|| format!("reading {}", args.ct.display()))?
        .to_f32();
    let defaults = UsRegisterOptions::default();
    let options = UsRegisterOptions {
        max_frames_used: args.frames_used,
        ct_window_hu: args.window_hu.unwrap_or(defaults.ct_window_hu),
        dark_below: args.dark_below.unwrap_or(defaults.dark_below),
        search_starts: args.starts.unwrap_or(defaults.search_starts),
        translation_search_mm: args.search_mm.unwrap_or(defaults.translation_search_mm),
        rotation_search_deg: args.search_deg.unwrap_or(defaults.rotation_search_deg),
        candidates_carried: args.carried.unwrap_or(defaults.candidates_carried),
        levels: match &args.levels {
            Some(l) => l
                .iter()
                .enumerate()
                .map(
                    |(k, &(spacing_mm, patch_radius, ct_spacing_mm))| UsRegisterLevel {
                        spacing_mm,
                        ct_spacing_mm,
                        patch_radius,
                        step_mm: (1.5 * spacing_mm).max(2.0),
                        step_deg: (1.5 * spacing_mm).max(2.0),
                        margin_mm: if k == 0 { 40.0 } else { 12.0 },
                    },
                )
                .collect(),
            None => defaults.levels.clone(),
        },
        ..defaults
    };
    let mut cases = Vec::new();
    let (mut after, mut mean_before, mut times) = (Vec::new(), Vec::new(), Vec::new());
    let mut failures = 0usize;
    for case in args.first..args.first + args.cases {
        let mut rng = Rng(args.seed.wrapping_mul(1_000_003).wrapping_add(case as u64));
        let mut draws = 0;
        let sweep = loop {
            draws += 1;
            if let Some(s) = simulate_sweep(&ct, &mut rng)? {
                break s;
            }
            if draws >= MAX_DRAWS {
                bail!("case {case}: no sweep inside the CT in {MAX_DRAWS} draws");
            }
        };
        // The tracking error: rotation about the middle frame's centre, then a shift.
        let mid = &sweep.planes[sweep.planes.len() / 2];
        let centre = mid.pixel_to_lps([0.5 * mid.width_px() as f64, 0.5 * mid.height_px() as f64]);
        let angles: Vec<f64> = (0..3).map(|_| rng.uniform(-ERROR_DEG, ERROR_DEG)).collect();
        let shift: Vec3 = std::array::from_fn(|_| rng.uniform(-ERROR_MM, ERROR_MM));
        let r = mat3_mul(
            &rotation([0.0, 0.0, 1.0], angles[2]),
            &mat3_mul(
                &rotation([0.0, 1.0, 0.0], angles[1]),
                &rotation([1.0, 0.0, 0.0], angles[0]),
            ),
        );
        let error = rigid_about(&r, centre, shift);
        let tracked: Vec<ImagePlane> = sweep
            .planes
            .iter()
            .map(|p| {
                ImagePlane::new(
                    mat4_mul(&error, &p.image_to_lps()),
                    p.width_px(),
                    p.height_px(),
                )
            })
            .collect::<Result<_, _>>()?;
        let input: Vec<(ImagePlane, &[u8])> = tracked
            .iter()
            .cloned()
            .zip(sweep.pixels.iter().map(Vec::as_slice))
            .collect();
        let t0 = Instant::now();
        let result = register_sweep(&ct, &input, &options);
        let seconds = t0.elapsed().as_secs_f64();
        let points = targets(&sweep.planes);
        let before: Vec<f64> = points
            .iter()
            .map(|&x| distance(apply(&error, x), x))
            .collect();
        let before_mean = before.iter().sum::<f64>() / before.len() as f64;
        mean_before.push(before_mean);
        times.push(seconds);
        let case_json = match result {
            Ok(reg) => {
                let moved = mat4_mul(&reg.correction_lps, &error);
                let tre: Vec<f64> = points
                    .iter()
                    .map(|&x| distance(apply(&moved, x), x))
                    .collect();
                let tre_mean = tre.iter().sum::<f64>() / tre.len() as f64;
                let tre_max = tre.iter().copied().fold(0.0, f64::max);
                after.push(tre_mean);
                json!({
                    "case": case,
                    "error_deg": angles,
                    "error_mm": shift,
                    "tre_before_mm": before_mean,
                    "tre_before_max_mm": before.iter().copied().fold(0.0, f64::max),
                    "tre_mm": tre_mean,
                    "tre_max_mm": tre_max,
                    "seconds": seconds,
                    "lc2_initial": reg.lc2_initial,
                    "lc2_final": reg.lc2_final,
                    "evaluations": reg.evaluations,
                    "converged": reg.converged,
                    "simulation": sweep.description,
                    "draws": draws,
                })
            }
            Err(e) => {
                failures += 1;
                after.push(f64::INFINITY);
                json!({"case": case, "error": e.to_string(), "tre_before_mm": before_mean,
                       "seconds": seconds, "simulation": sweep.description})
            }
        };
        eprintln!(
            "case {case:2}: TRE {:.2} → {:.2} mm (max {:.2}), {:.2} s, LC² {:.3} → {:.3}",
            case_json["tre_before_mm"].as_f64().unwrap_or(f64::NAN),
            case_json["tre_mm"].as_f64().unwrap_or(f64::NAN),
            case_json["tre_max_mm"].as_f64().unwrap_or(f64::NAN),
            seconds,
            case_json["lc2_initial"].as_f64().unwrap_or(f64::NAN),
            case_json["lc2_final"].as_f64().unwrap_or(f64::NAN),
        );
        cases.push(case_json);
    }
    let n = args.cases.max(1) as f64;
    let within = after.iter().filter(|&&t| t <= GOAL_TRE_MM).count();
    let mut sorted = after.clone();
    sorted.sort_by(f64::total_cmp);
    let mut sorted_before = mean_before.clone();
    sorted_before.sort_by(f64::total_cmp);
    let mut sorted_times = times.clone();
    sorted_times.sort_by(f64::total_cmp);
    let summary = json!({
        "cases": args.cases,
        "failures": failures,
        "fraction_within_2mm": within as f64 / n,
        "tre_median_mm": percentile(&sorted, 0.5),
        "tre_p90_mm": percentile(&sorted, 0.9),
        "tre_before_median_mm": percentile(&sorted_before, 0.5),
        "seconds_median": percentile(&sorted_times, 0.5),
        "seconds_max": sorted_times.last().copied().unwrap_or(f64::NAN),
        "threads": rayon::current_num_threads(),
        "options": options,
    });
    eprintln!(
        "within {GOAL_TRE_MM} mm: {within}/{} ({:.0} %), TRE median {:.2} mm, p90 {:.2} mm \
         (before: median {:.2} mm); failures {failures}",
        args.cases,
        100.0 * within as f64 / n,
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted_before, 0.5),
    );
    eprintln!(
        "time per registration: median {:.2} s, max {:.2} s on {} threads",
        percentile(&sorted_times, 0.5),
        sorted_times.last().copied().unwrap_or(f64::NAN),
        rayon::current_num_threads()
    );
    println!("{}", json!({"summary": summary, "cases": cases}));
    Ok(())
}
