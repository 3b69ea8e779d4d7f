//! The registration driver: polarity detection, then CMA-ES per pyramid level (coarse
//! detector and volume first), each generation rendered as one batch.

use std::time::Instant;

use pinhole_volume::Vec3;
use pinhole_xray::{Image, Projection};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::cmaes::{self, CmaesSettings};
use crate::gauss_newton::{self, Evaluation, LmSettings};
use crate::pose::Pose;
use crate::renderer::Renderer;
use crate::similarity::{self, bin, Prepared, Similarity};
use crate::RegisterError;

/// How the X-ray's pixel values relate to the line integral ∫μ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Polarity {
    /// Values grow with ∫μ (bone bright): a log image or a line-integral map.
    LineIntegral,
    /// Values fall linearly with ∫μ (bone dark): a display image (log, inverted).
    Inverted,
    /// Raw detector intensity `I₀·exp(−∫μ)` (bone dark): ∫μ = −ln I + const.
    Intensity,
    /// Values grow as `exp(∫μ)`: the negated log is the line integral with the sign
    /// flipped (a raw image stored MONOCHROME1).
    InvertedIntensity,
}

impl Polarity {
    pub const ALL: [Polarity; 4] = [
        Self::LineIntegral,
        Self::Inverted,
        Self::Intensity,
        Self::InvertedIntensity,
    ];

    /// The X-ray mapped to a quantity that grows (roughly linearly) with ∫μ.
    pub fn apply(self, image: &Image) -> Image {
        let max = image.data.iter().copied().fold(0.0f32, f32::max);
        let floor = (max * 1e-4).max(1e-12);
        let data = image
            .data
            .iter()
            .map(|&v| match self {
                Self::LineIntegral => v,
                Self::Inverted => -v,
                Self::Intensity => -(v.max(floor)).ln(),
                Self::InvertedIntensity => (v.max(floor)).ln(),
            })
            .collect();
        Image {
            width: image.width,
            height: image.height,
            data,
        }
    }
}

/// One level of the coarse-to-fine schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LevelSpec {
    /// Detector binning (1 = the X-ray's own pixels).
    pub detector_bin: usize,
    pub search: Search,
}

/// How a level searches.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Search {
    /// Global: CMA-ES, each generation rendered as one batch.
    Cmaes {
        /// Initial step, in units of (`rotation_scale_deg`, `translation_scale_mm`).
        sigma: f64,
        population: usize,
        max_generations: usize,
    },
    /// Local: Levenberg–Marquardt on the similarity's least-squares form, the Jacobian
    /// from forward differences (one batch of six images per iteration).
    GaussNewton {
        max_iterations: usize,
        /// Forward-difference step, in search units.
        step_units: f64,
    },
}

/// Registration settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub similarity: Similarity,
    /// One unit of the search space in degrees (rotations)…
    pub rotation_scale_deg: f64,
    /// …and in mm (translations).
    pub translation_scale_mm: f64,
    /// The search is confined to ± this many units around the start.
    pub bound_units: f64,
    /// Stop a level when the search distribution is this small (units).
    pub tolerance_units: f64,
    /// Forced polarity; `None` detects it.
    pub polarity: Option<Polarity>,
    pub seed: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            similarity: Similarity::GradientNcc,
            rotation_scale_deg: 10.0,
            translation_scale_mm: 20.0,
            bound_units: 2.0,
            tolerance_units: 0.002,
            polarity: None,
            seed: 1,
        }
    }
}

/// The default schedule for CT levels of `levels_mm` voxels (coarse first) seen through a
/// detector whose pixels measure `pixel_at_isocenter_mm` at the isocentre: each level's
/// detector binned to pixels of about 1.25 voxels at the isocentre; a global CMA-ES
/// (λ 32, 40 generations, σ 0.5 units) on the coarsest, then a Gauss–Newton refinement
/// (≤ 8 iterations, difference steps of 0.005 units per mm of voxel: 0.1° and 0.2 mm at
/// 2 mm) on each finer one.
pub fn default_levels(levels_mm: &[f64], pixel_at_isocenter_mm: f64) -> Vec<LevelSpec> {
    let bin_for = |level_mm: f64| {
        let bin = (1.25 * level_mm / pixel_at_isocenter_mm.max(1e-6)).round();
        if bin.is_finite() {
            bin.clamp(1.0, 4096.0) as usize
        } else {
            1
        }
    };
    levels_mm
        .iter()
        .enumerate()
        .map(|(k, &level_mm)| LevelSpec {
            detector_bin: bin_for(level_mm),
            search: if k == 0 {
                Search::Cmaes {
                    sigma: 0.5,
                    population: 32,
                    max_generations: 40,
                }
            } else {
                Search::GaussNewton {
                    max_iterations: 8,
                    step_units: 0.005 * level_mm,
                }
            },
        })
        .collect()
}

/// The CT levels' voxel sizes (mm) of [`default_levels`]: 8, 4 and 2 mm.
pub const DEFAULT_LEVELS_MM: [f64; 3] = [8.0, 4.0, 2.0];

/// What one level did.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct LevelReport {
    pub detector: [usize; 2],
    pub renderer: String,
    /// `cmaes` or `gauss_newton` (empty in reports written before the field existed).
    #[serde(default)]
    pub search: String,
    pub drrs: usize,
    /// CMA-ES generations or Gauss–Newton iterations.
    pub generations: usize,
    pub similarity: f64,
    pub seconds: f64,
    pub params: [f64; 6],
}

/// The registration's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Registration {
    pub pose: Pose,
    /// Similarity at the last level (the best pose).
    pub similarity: f64,
    pub polarity: Polarity,
    /// NCC of each polarity candidate with the DRR of the start pose.
    pub polarity_scores: Vec<(Polarity, f64)>,
    pub drrs_rendered: usize,
    pub seconds: f64,
    pub levels: Vec<LevelReport>,
}

impl Registration {
    /// DRRs rendered per second over the whole run.
    pub fn drrs_per_second(&self) -> f64 {
        self.drrs_rendered as f64 / self.seconds.max(1e-9)
    }
}

/// `projection` with its detector binned by `factor` (same physical detector, trailing
/// partial bins dropped).
pub fn bin_projection(p: &Projection, factor: usize) -> Projection {
    let f = factor.max(1);
    let half = (f as f64 - 1.0) / 2.0;
    Projection {
        source_lps: p.source_lps,
        pixel00_lps: p.pixel_lps(half, half),
        col_step: p.col_step.map(|v| v * f as f64),
        row_step: p.row_step.map(|v| v * f as f64),
        width: p.width / f,
        height: p.height / f,
    }
}

/// Registers the CT to `xray`, seen through `nominal` (the C-arm's nominal projection, at
/// the X-ray's full detector size), starting from `start` (usually the identity about
/// the isocentre). `levels` pairs each level's schedule with the renderer of that level's
/// volume (coarse first).
pub fn register(
    xray: &Image,
    nominal: &Projection,
    start: &Pose,
    levels: &[(&dyn Renderer, LevelSpec)],
    settings: &Settings,
) -> Result<Registration, RegisterError> {
    let t0 = Instant::now();
    if xray.width != nominal.width || xray.height != nominal.height {
        return Err(RegisterError::Input(format!(
            "X-ray is {}x{} pixels but the detector is {}x{}",
            xray.width, xray.height, nominal.width, nominal.height
        )));
    }
    let Some((first_renderer, first_spec)) = levels.first() else {
        return Err(RegisterError::Input("no registration levels".into()));
    };
    let center: Vec3 = start.center_lps;
    let mut drrs = 0usize;

    // Polarity: NCC of each candidate with the DRR of the start pose at the coarse level.
    let coarse = bin_projection(nominal, first_spec.detector_bin);
    let start_drr = first_renderer
        .render_batch(&[start.projection(&coarse)?])?
        .pop()
        .ok_or_else(|| RegisterError::Render("no image came back".into()))?;
    drrs += 1;
    let polarity_scores: Vec<(Polarity, f64)> = Polarity::ALL
        .iter()
        .map(|&p| {
            let fixed = bin(&p.apply(xray), first_spec.detector_bin);
            (p, similarity::ncc(&fixed, &start_drr))
        })
        .collect();
    let polarity = settings.polarity.unwrap_or_else(|| {
        polarity_scores
            .iter()
            .copied()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(Polarity::LineIntegral, |(p, _)| p)
    });
    let fixed_full = polarity.apply(xray);

    let (rs, ts) = (settings.rotation_scale_deg, settings.translation_scale_mm);
    let start_params = start.params();
    let to_params = |u: &[f64]| -> [f64; 6] {
        std::array::from_fn(|i| start_params[i] + u[i] * if i < 3 { rs } else { ts })
    };
    let b = settings.bound_units;
    let mut u = vec![0.0; 6];
    let mut reports = Vec::new();
    let mut best_similarity = f64::NEG_INFINITY;
    for (n, (renderer, spec)) in levels.iter().enumerate() {
        let tl = Instant::now();
        let projection = bin_projection(nominal, spec.detector_bin);
        let fixed = bin(&fixed_full, spec.detector_bin);
        let prepared = Prepared::new(&fixed, settings.similarity);
        let mut level_drrs = 0usize;
        let bounds = Some((vec![-b; 6], vec![b; 6]));
        let mut render = |xs: &[Vec<f64>]| -> Result<Vec<Image>, RegisterError> {
            let projections = xs
                .iter()
                .map(|x| Pose::from_params(&to_params(x), center).projection(&projection))
                .collect::<Result<Vec<_>, _>>()?;
            let images = renderer.render_batch(&projections)?;
            level_drrs += images.len();
            Ok(images)
        };
        let (best_x, similarity, generations, search) = match spec.search {
            Search::Cmaes {
                sigma,
                population,
                max_generations,
            } => {
                let cma = CmaesSettings {
                    sigma,
                    population,
                    max_generations,
                    tolerance: settings.tolerance_units,
                    bounds,
                    seed: settings.seed.wrapping_add(n as u64 * 7919),
                };
                let r = cmaes::minimize(&u, &cma, |xs| {
                    let images = render(xs)?;
                    Ok::<_, RegisterError>(images.iter().map(|im| -prepared.score(im)).collect())
                })?;
                (r.best_x, -r.best_f, r.generations, "cmaes")
            }
            Search::GaussNewton {
                max_iterations,
                step_units,
            } => {
                let lm = LmSettings {
                    max_iterations,
                    step: step_units,
                    bounds,
                    tolerance: settings.tolerance_units,
                    ..LmSettings::default()
                };
                let r = gauss_newton::maximise(&u, &lm, |xs| {
                    render(xs)?
                        .iter()
                        .map(|im| {
                            let residual = prepared.residual(im).ok_or_else(|| {
                                RegisterError::Render("a DRR of the wrong size came back".into())
                            })?;
                            Ok(Evaluation {
                                score: prepared.score(im),
                                residual,
                            })
                        })
                        .collect::<Result<Vec<_>, RegisterError>>()
                })?;
                (r.best_x, r.best_score, r.iterations, "gauss_newton")
            }
        };
        drrs += level_drrs;
        u = best_x;
        best_similarity = similarity;
        reports.push(LevelReport {
            detector: [projection.width, projection.height],
            renderer: renderer.describe(),
            search: search.to_owned(),
            drrs: level_drrs,
            generations,
            similarity: best_similarity,
            seconds: tl.elapsed().as_secs_f64(),
            params: to_params(&u),
        });
    }
    Ok(Registration {
        pose: Pose::from_params(&to_params(&u), center),
        similarity: best_similarity,
        polarity,
        polarity_scores,
        drrs_rendered: drrs,
        seconds: t0.elapsed().as_secs_f64(),
        levels: reports,
    })
}
