//! Pennes bioheat equation on a regular grid, explicit finite differences.
//!
//! ρc ∂T/∂t = k ∇²T − ω_b ρ_b c_b (T − T_a) + Q
//!
//! solved for the rise θ = T − 37 °C with the 7-point Laplacian and forward Euler:
//!
//! θ' = c·θ + a·Σ₆ θ_neighbour + s,  a = k·dt/(ρc·h²),  p = ω_b ρ_b c_b·dt/(ρc),
//! c = 1 − 6a − p,  s = Q·dt/(ρc).
//!
//! The step is stable and monotone when c ≥ 0 for every voxel, i.e.
//! dt ≤ 1 / (6k/(ρc·h²) + ω_b ρ_b c_b/(ρc)); [`Settings::safety`] (0.9 by default) keeps a
//! margin below that limit. Simplifications (documented in the crate docs): the grid must
//! be isotropic; conductivity enters per voxel in the non-conservative form k_i·∇²T (soft
//! tissues differ by < 10 % in k); voxels labelled as large vessels are Dirichlet sinks at
//! body temperature; the outer faces of the grid are held at body temperature (make the
//! grid several perfusion lengths larger than the zone). What limits real zones is in
//! [`Settings::physics`] (see [`crate::physics`]): water vaporisation at 100 °C,
//! conductivity rising with temperature, microwave absorption falling as tissue dries;
//! and perfusion stops where tissue coagulates (Ω ≥ 1). [`Physics::LINEAR`] switches the
//! first three off (analytic verification).

use pinhole_volume::{Grid, Mask, Vec3, Volume};
use rayon::prelude::*;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::damage::{cem43_rate_min_per_s, Arrhenius, Criterion, LIVER_ARRHENIUS};
use crate::damage::{CEM43_THRESHOLD_MIN, ZERO_CELSIUS_K};
use crate::error::{invalid, positive, AblationError};
use crate::physics::{vaporise, Physics};
use crate::zone::{add, scale, sub, volume_from, Applicator};

/// Core body (and arterial blood) temperature, °C.
pub const BODY_TEMPERATURE_C: f64 = 37.0;

/// Thermal properties of one tissue class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Tissue {
    pub name: String,
    pub conductivity_w_m_k: f64,
    pub density_kg_m3: f64,
    pub heat_capacity_j_kg_k: f64,
    /// Blood perfusion rate ω_b, 1/s (volume of blood per volume of tissue per second).
    pub perfusion_per_s: f64,
}

impl Tissue {
    /// Liver, as in COMSOL's `microwave_cancer_therapy` application: ρ = 1079 kg/m³,
    /// c = 3540 J/(kg·K), k = 0.52 W/(m·K), ω_b = 3.6e-3 1/s. (PerkLab's AblationPlanner
    /// uses the same ρ, c, k with ω_b = 0.01 1/s; see shared/reference/vessel_ablation.md.)
    pub fn liver() -> Self {
        Self {
            name: "liver".into(),
            conductivity_w_m_k: 0.52,
            density_kg_m3: 1079.0,
            heat_capacity_j_kg_k: 3540.0,
            perfusion_per_s: 3.6e-3,
        }
    }

    fn validate(&self) -> Result<(), AblationError> {
        positive("tissue conductivity", self.conductivity_w_m_k)?;
        positive("tissue density", self.density_kg_m3)?;
        positive("tissue heat capacity", self.heat_capacity_j_kg_k)?;
        if !self.perfusion_per_s.is_finite() || self.perfusion_per_s < 0.0 {
            return Err(invalid(
                "tissue perfusion",
                format!("{}: must be >= 0, got {}", self.name, self.perfusion_per_s),
            ));
        }
        Ok(())
    }
}

/// Blood properties (perfusion heat sink).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Blood {
    pub density_kg_m3: f64,
    pub heat_capacity_j_kg_k: f64,
}

/// Blood as in COMSOL's `microwave_cancer_therapy`: ρ_b = 1000 kg/m³, c_b = 3639 J/(kg·K).
pub const BLOOD: Blood = Blood {
    density_kg_m3: 1000.0,
    heat_capacity_j_kg_k: 3639.0,
};

/// A heat source.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// `power_w` deposited uniformly in the voxels whose centres lie within the sphere.
    UniformSphere {
        center_lps: Vec3,
        radius_mm: f64,
        power_w: f64,
    },
    /// Microwave antenna: an ellipsoidal Gaussian specific-absorption pattern centred
    /// `hotspot_behind_tip_mm` proximal to the tip (towards the entry), widths
    /// `sigma_axial_mm` along and `sigma_radial_mm` across the axis, cut at 3 σ and
    /// normalised so that the deposited power is `power_w`.
    Microwave {
        applicator: Applicator,
        power_w: f64,
        hotspot_behind_tip_mm: f64,
        sigma_axial_mm: f64,
        sigma_radial_mm: f64,
    },
    /// Laser fibre diffuser: `power_w` spread evenly along the `length_mm` of axis that
    /// ends at the tip.
    LaserLine {
        applicator: Applicator,
        power_w: f64,
        length_mm: f64,
    },
}

impl Source {
    /// A microwave antenna with the default pattern (hotspot 8 mm behind the tip,
    /// σ = 8 mm along and 4 mm across the axis: a rough tear-drop, not a solved EM field).
    pub fn microwave(applicator: Applicator, power_w: f64) -> Self {
        Source::Microwave {
            applicator,
            power_w,
            hotspot_behind_tip_mm: 8.0,
            sigma_axial_mm: 8.0,
            sigma_radial_mm: 4.0,
        }
    }

    /// A 10 mm laser diffuser ending at the tip.
    pub fn laser(applicator: Applicator, power_w: f64) -> Self {
        Source::LaserLine {
            applicator,
            power_w,
            length_mm: 10.0,
        }
    }

    /// Power per voxel (linear offset, W) on `grid`; sums to the source power.
    pub fn deposit(&self, grid: &Grid) -> Result<Vec<(usize, f64)>, AblationError> {
        let weights: Vec<(usize, f64)> = match *self {
            Source::UniformSphere {
                center_lps,
                radius_mm,
                power_w,
            } => {
                positive("sphere source power", power_w)?;
                positive("sphere source radius", radius_mm)?;
                let r2 = radius_mm * radius_mm;
                weigh(grid, |p| {
                    let d = sub(p, center_lps);
                    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] <= r2).then_some(1.0)
                })
            }
            Source::Microwave {
                applicator,
                power_w,
                hotspot_behind_tip_mm,
                sigma_axial_mm,
                sigma_radial_mm,
            } => {
                positive("microwave power", power_w)?;
                positive("microwave sigma_axial_mm", sigma_axial_mm)?;
                positive("microwave sigma_radial_mm", sigma_radial_mm)?;
                let axis = applicator.axis_lps;
                let hotspot = sub(applicator.tip_lps, scale(axis, hotspot_behind_tip_mm));
                weigh(grid, |p| {
                    let d = sub(p, hotspot);
                    let t = d[0] * axis[0] + d[1] * axis[1] + d[2] * axis[2];
                    let r2 = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2] - t * t).max(0.0);
                    let q = t * t / (sigma_axial_mm * sigma_axial_mm)
                        + r2 / (sigma_radial_mm * sigma_radial_mm);
                    (q <= 9.0).then(|| (-0.5 * q).exp())
                })
            }
            Source::LaserLine {
                applicator,
                power_w,
                length_mm,
            } => {
                positive("laser power", power_w)?;
                positive("laser diffuser length", length_mm)?;
                let h = grid.spacing_mm()[0];
                let samples = (length_mm / (h / 4.0)).ceil().max(1.0) as usize + 1;
                let start = sub(applicator.tip_lps, scale(applicator.axis_lps, length_mm));
                let mut per_voxel = std::collections::BTreeMap::<usize, f64>::new();
                for s in 0..samples {
                    let f = s as f64 / (samples - 1) as f64;
                    let p = add(start, scale(applicator.axis_lps, f * length_mm));
                    if let Some(v) = grid.world_to_voxel(p) {
                        *per_voxel.entry(grid.offset(v)).or_default() += 1.0;
                    }
                }
                per_voxel.into_iter().collect()
            }
        };
        let power = match *self {
            Source::UniformSphere { power_w, .. }
            | Source::Microwave { power_w, .. }
            | Source::LaserLine { power_w, .. } => power_w,
        };
        let total: f64 = weights.iter().map(|w| w.1).sum();
        if total <= 0.0 {
            return Err(invalid(
                "heat source",
                format!("{self:?} deposits into no voxel of the grid"),
            ));
        }
        Ok(weights
            .into_iter()
            .map(|(o, w)| (o, power * w / total))
            .collect())
    }
}

fn weigh(grid: &Grid, weight: impl Fn(Vec3) -> Option<f64> + Sync) -> Vec<(usize, f64)> {
    let [nx, ny, _] = grid.dims();
    (0..grid.voxel_count())
        .into_par_iter()
        .filter_map(|o| {
            let i = o % nx;
            let j = (o / nx) % ny;
            let k = o / (nx * ny);
            weight(grid.index_to_world([i as f64, j as f64, k as f64])).map(|w| (o, w))
        })
        .collect()
}

/// A bioheat problem: a grid, a tissue class per voxel, vessel sinks and sources.
#[derive(Debug, Clone)]
pub struct Problem {
    /// Isotropic grid (any orthonormal direction).
    pub grid: Grid,
    /// Index into `tissues` per voxel.
    pub tissue_of_voxel: Vec<u8>,
    pub tissues: Vec<Tissue>,
    /// Voxels held at body temperature (large vessels).
    pub sink: Vec<bool>,
    pub blood: Blood,
    pub sources: Vec<Source>,
}

impl Problem {
    /// One tissue everywhere, no sinks, no sources.
    pub fn homogeneous(grid: Grid, tissue: Tissue) -> Self {
        let n = grid.voxel_count();
        Self {
            grid,
            tissue_of_voxel: vec![0; n],
            tissues: vec![tissue],
            sink: vec![false; n],
            blood: BLOOD,
            sources: Vec::new(),
        }
    }

    fn validate(&self) -> Result<f64, AblationError> {
        let [sx, sy, sz] = self.grid.spacing_mm();
        if (sx - sy).abs() > 1e-6 * sx || (sx - sz).abs() > 1e-6 * sx {
            return Err(invalid(
                "bioheat grid",
                format!(
                    "spacing must be isotropic, got {:?} mm",
                    self.grid.spacing_mm()
                ),
            ));
        }
        let n = self.grid.voxel_count();
        if self.tissue_of_voxel.len() != n || self.sink.len() != n {
            return Err(invalid(
                "bioheat problem",
                format!(
                    "{} tissue indices and {} sink flags for {n} voxels",
                    self.tissue_of_voxel.len(),
                    self.sink.len()
                ),
            ));
        }
        if let Some(&bad) = self
            .tissue_of_voxel
            .iter()
            .find(|&&t| t as usize >= self.tissues.len())
        {
            return Err(invalid(
                "bioheat problem",
                format!("tissue index {bad} but {} tissues", self.tissues.len()),
            ));
        }
        for t in &self.tissues {
            t.validate()?;
        }
        positive("blood density", self.blood.density_kg_m3)?;
        positive("blood heat capacity", self.blood.heat_capacity_j_kg_k)?;
        Ok(sx)
    }

    /// The largest stable explicit time step, s (c = 1 − 6a − p ≥ 0 for every tissue).
    pub fn stable_dt_s(&self) -> Result<f64, AblationError> {
        self.stable_dt_with_conductivity_factor(1.0)
    }

    /// The stable step when conductivity may grow by `factor` (k(T)/k₃₇ at its largest).
    fn stable_dt_with_conductivity_factor(&self, factor: f64) -> Result<f64, AblationError> {
        let h_m = self.validate()? * 1e-3;
        let mut used = vec![false; self.tissues.len()];
        for (&t, &s) in self.tissue_of_voxel.iter().zip(&self.sink) {
            if !s {
                used[t as usize] = true;
            }
        }
        let wb = self.blood.density_kg_m3 * self.blood.heat_capacity_j_kg_k;
        let rate = self
            .tissues
            .iter()
            .zip(&used)
            .filter(|(_, &u)| u)
            .map(|(t, _)| {
                let rc = t.density_kg_m3 * t.heat_capacity_j_kg_k;
                6.0 * factor * t.conductivity_w_m_k / (rc * h_m * h_m) + t.perfusion_per_s * wb / rc
            })
            .fold(0.0, f64::max);
        Ok(if rate > 0.0 {
            1.0 / rate
        } else {
            f64::INFINITY
        })
    }
}

/// How to run the solver.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    /// Heating time, s.
    pub duration_s: f64,
    /// Time after the power is switched off that is still simulated (damage accrues), s.
    pub cooldown_s: f64,
    /// Fraction of the stability limit used as time step (0 < safety ≤ 1).
    pub safety: f64,
    /// Upper bound on the time step, s (None: only the stability limit applies).
    pub max_dt_s: Option<f64>,
    /// Track Arrhenius Ω and CEM43 (off for pure temperature benchmarks).
    pub damage: bool,
    pub arrhenius: Arrhenius,
    /// Stop perfusion in voxels that reached Ω ≥ 1 (coagulated tissue has no flow).
    pub perfusion_stops_at_coagulation: bool,
    /// Uniform initial temperature rise above 37 °C (0 in practice; tests use it).
    pub initial_rise_k: f64,
    /// Time steps advanced per sweep over the grid (temporal blocking, ≥ 1). Each thread
    /// carries its z-range through this many steps slab by slab while the slabs are in
    /// cache, so the coefficients are read from memory once per sweep instead of once
    /// per step. Temperatures do not depend on it; with perfusion stopping at
    /// coagulation, a voxel that coagulates keeps its perfusion until the sweep ends.
    /// Nonlinear [`Settings::physics`] needs the coefficients of every step, so it runs
    /// one step per sweep whatever this says.
    pub steps_per_sweep: usize,
    /// Vaporisation, temperature-dependent conductivity and dehydration
    /// ([`Physics::TISSUE`] by default; [`Physics::LINEAR`] for plain Pennes).
    pub physics: Physics,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            duration_s: 600.0,
            cooldown_s: 0.0,
            safety: 0.9,
            max_dt_s: None,
            damage: true,
            arrhenius: LIVER_ARRHENIUS,
            perfusion_stops_at_coagulation: true,
            initial_rise_k: 0.0,
            steps_per_sweep: 4,
            physics: Physics::TISSUE,
        }
    }
}

/// Result of a run, on the problem's grid.
#[derive(Debug, Clone)]
pub struct Solution {
    /// Temperature at the end, °C.
    pub temperature_c: Volume<f32>,
    /// Highest temperature each voxel reached, °C.
    pub peak_temperature_c: Volume<f32>,
    /// Arrhenius Ω at the end (when damage was tracked).
    pub omega: Option<Volume<f32>>,
    /// CEM43 at the end, minutes (when damage was tracked).
    pub cem43_min: Option<Volume<f32>>,
    pub dt_s: f64,
    pub steps: usize,
    pub simulated_s: f64,
    /// Power that went into tissue (sources minus what fell into sinks), W.
    pub deposited_w: f64,
    pub max_temperature_c: f64,
    /// Wall time of the time stepping alone (set-up and output excluded), s.
    pub stepping_s: f64,
}

impl Solution {
    /// Voxels ablated under `criterion` (empty mask when damage was not tracked).
    pub fn ablated(&self, criterion: Criterion) -> Mask {
        let grid = self.temperature_c.grid();
        let (field, threshold) = match criterion {
            Criterion::Arrhenius => (&self.omega, 1.0f32),
            Criterion::Cem43 => (&self.cem43_min, CEM43_THRESHOLD_MIN as f32),
        };
        match field {
            Some(v) => v.map(|x| x >= threshold),
            None => Mask::filled(grid.clone(), false),
        }
    }
}

/// Damage bookkeeping, structure of arrays over the padded grid. Ω and CEM43 are stored
/// as the excess over the body-temperature rate, so voxels that never warm by
/// [`WARM_K`] are only read, never written; the body-temperature part (rate × elapsed
/// time) is added when results are read.
struct DamageState {
    omega_excess: Vec<f32>,
    cem43_excess_min: Vec<f32>,
    peak_rise: Vec<f32>,
    /// Perfusion coefficient p per voxel (taken out of c when the voxel coagulates).
    p: Vec<f32>,
}

/// Rise above body temperature (K) below which a voxel accrues damage at the
/// body-temperature rate, without evaluating the rate (most of a large grid stays this
/// cool). The liver Arrhenius rate grows by Ea/(R·T²) ≈ 32 % per K near 37 °C, so over a
/// 10-minute run this under-counts Ω by at most 0.16 × 2.9e-4 /s × 600 s ≈ 0.03 in those
/// voxels, far from the Ω = 1 threshold (CEM43: < 0.001 min).
pub const WARM_K: f32 = 0.5;

/// Runs the explicit scheme for `settings.duration_s` (+ cooldown).
pub fn solve(problem: &Problem, settings: &Settings) -> Result<Solution, AblationError> {
    let steps = TimeSteps::of(problem, settings)?;
    let h_m = problem.grid.spacing_mm()[0] * 1e-3;
    let padding = Padding::of(&problem.grid);
    let mut fields = initial_fields(problem, settings, &padding, steps.dt, h_m);
    let (mut sources, deposited_w) = source_terms(problem, &padding, steps.dt, h_m)?;
    let (kernel, base_rates) = damage_kernel(settings, steps.dt);
    let stepping = std::time::Instant::now();
    march(
        &mut fields,
        &mut sources,
        &kernel,
        &padding,
        &steps,
        settings,
    );
    let stepping_s = stepping.elapsed().as_secs_f64();
    let mut solution = read_back(problem, settings, &fields, &padding, base_rates, &steps);
    solution.deposited_w = deposited_w;
    solution.stepping_s = stepping_s;
    Ok(solution)
}

/// The time step: the stability limit × safety, capped by the duration and `max_dt_s`,
/// shrunk so that whole steps fill the heating time; cooldown in the same steps.
struct TimeSteps {
    dt: f64,
    heat_steps: usize,
    cool_steps: usize,
}

impl TimeSteps {
    fn of(problem: &Problem, settings: &Settings) -> Result<Self, AblationError> {
        settings.physics.validate()?;
        let dt_limit = problem
            .stable_dt_with_conductivity_factor(settings.physics.max_conductivity_factor())?;
        positive("duration_s", settings.duration_s)?;
        if !(settings.safety > 0.0 && settings.safety <= 1.0) {
            return Err(invalid(
                "safety",
                format!("must be in (0, 1], got {}", settings.safety),
            ));
        }
        if !settings.cooldown_s.is_finite() || settings.cooldown_s < 0.0 {
            return Err(invalid(
                "cooldown_s",
                format!("must be >= 0, got {}", settings.cooldown_s),
            ));
        }
        let mut dt_max = (dt_limit * settings.safety).min(settings.duration_s);
        if let Some(cap) = settings.max_dt_s {
            dt_max = dt_max.min(positive("max_dt_s", cap)?);
        }
        let heat_steps = (settings.duration_s / dt_max).ceil().max(1.0) as usize;
        let dt = settings.duration_s / heat_steps as f64;
        let cool_steps = (settings.cooldown_s / dt).round() as usize;
        Ok(Self {
            dt,
            heat_steps,
            cool_steps,
        })
    }

    fn total(&self) -> usize {
        self.heat_steps + self.cool_steps
    }
}

/// The grid with a one-voxel halo on every side (held at θ = 0, i.e. 37 °C).
struct Padding {
    dims: [usize; 3],
    px: usize,
    py: usize,
    len: usize,
}

impl Padding {
    fn of(grid: &Grid) -> Self {
        let [nx, ny, nz] = grid.dims();
        let (px, py) = (nx + 2, ny + 2);
        Self {
            dims: [nx, ny, nz],
            px,
            py,
            len: px * py * (nz + 2),
        }
    }

    /// The padded index of interior voxel offset `o`.
    fn pad(&self, o: usize) -> usize {
        let [nx, ny, _] = self.dims;
        let i = o % nx;
        let j = (o / nx) % ny;
        let k = o / (nx * ny);
        (i + 1) + self.px * ((j + 1) + self.py * (k + 1))
    }
}

/// The stepped fields over the padded grid.
struct Fields {
    coef_a: Vec<f32>,
    coef_c: Vec<f32>,
    /// The tissue part of `coef_c` at 37 °C, 1 − 6a (0 in halo and sinks; perfusion and
    /// temperature-dependent conductivity are applied on top).
    coef_c_body: Vec<f32>,
    state: DamageState,
    /// Rise above body temperature (K).
    theta: Vec<f32>,
    /// Latent heat each voxel can still absorb, K (vaporisation; 0 in halo and sinks).
    latent_left: Vec<f32>,
    /// The full latent capacity of each voxel, K (0: no water to boil).
    latent_capacity: Vec<f32>,
}

impl Fields {
    /// The water a padded voxel still holds (1 wet .. 0 dry).
    fn water_left(&self, q: usize) -> f64 {
        let cap = self.latent_capacity[q];
        if cap > 0.0 {
            f64::from(self.latent_left[q] / cap)
        } else {
            1.0
        }
    }
}

/// Per-voxel coefficients and the initial rise; the halo and sinks keep a = c = 0, so θ
/// stays 0 there.
fn initial_fields(
    problem: &Problem,
    settings: &Settings,
    padding: &Padding,
    dt: f64,
    h_m: f64,
) -> Fields {
    let padded_len = padding.len;
    let wb = problem.blood.density_kg_m3 * problem.blood.heat_capacity_j_kg_k;
    let coeffs: Vec<(f32, f32, f32)> = problem
        .tissues
        .iter()
        .map(|t| {
            let rc = t.density_kg_m3 * t.heat_capacity_j_kg_k;
            let a = t.conductivity_w_m_k * dt / (rc * h_m * h_m);
            let p = t.perfusion_per_s * wb * dt / rc;
            (a as f32, p as f32, (1.0 - 6.0 * a - p) as f32)
        })
        .collect();
    let mut coef_a = vec![0f32; padded_len];
    let mut coef_c = vec![0f32; padded_len];
    let mut state = DamageState {
        omega_excess: vec![0.0; padded_len],
        cem43_excess_min: vec![0.0; padded_len],
        peak_rise: vec![0.0; padded_len],
        p: vec![0.0; padded_len],
    };
    let mut theta = vec![0f32; padded_len];
    let vaporisation = settings.physics.vaporisation;
    let mut latent_capacity = vec![
        0f32;
        if vaporisation.is_some() {
            padded_len
        } else {
            0
        }
    ];
    for o in 0..problem.grid.voxel_count() {
        if problem.sink[o] {
            continue;
        }
        let q = padding.pad(o);
        let tissue = problem.tissue_of_voxel[o] as usize;
        let (a, p, c) = coeffs[tissue];
        coef_a[q] = a;
        coef_c[q] = c;
        state.p[q] = p;
        theta[q] = settings.initial_rise_k as f32;
        state.peak_rise[q] = settings.initial_rise_k as f32;
        if let Some(v) = vaporisation {
            latent_capacity[q] = v.capacity_k(problem.tissues[tissue].heat_capacity_j_kg_k) as f32;
        }
    }
    let coef_c_body = coef_a
        .iter()
        .map(|&a| if a > 0.0 { 1.0 - 6.0 * a } else { 0.0 })
        .collect();
    Fields {
        coef_c_body,
        coef_a,
        coef_c,
        state,
        theta,
        latent_left: latent_capacity.clone(),
        latent_capacity,
    }
}

/// The heating of every source per step: the padded voxels it heats, ascending, with
/// the rise per step (K) each gets now, and per source the wet-tissue pattern it is
/// reweighted from as tissue dries.
struct SourceTerms {
    /// (padded index, K per step), ascending by index.
    now: Vec<(usize, f32)>,
    /// Per source: whether dehydration reweights it (microwave), and its (slot in
    /// `now`, K per step in wet tissue) entries.
    patterns: Vec<(bool, Vec<(usize, f64)>)>,
}

impl SourceTerms {
    /// Reweights the microwave patterns by each voxel's remaining water, each keeping
    /// its total power (the antenna's power moves to tissue that still absorbs).
    fn reweight(&mut self, fields: &Fields, physics: &Physics) {
        if physics.vaporisation.is_none() || physics.dry_absorption_fraction >= 1.0 {
            return;
        }
        let mut values = vec![0f64; self.now.len()];
        for (dehydrates, pattern) in &self.patterns {
            if !dehydrates {
                for &(slot, wet) in pattern {
                    values[slot] += wet;
                }
                continue;
            }
            let weights: Vec<f64> = pattern
                .iter()
                .map(|&(slot, wet)| wet * physics.absorption(fields.water_left(self.now[slot].0)))
                .collect();
            let total_wet: f64 = pattern.iter().map(|p| p.1).sum();
            let total_now: f64 = weights.iter().sum();
            let renormalise = if total_now > 0.0 {
                total_wet / total_now
            } else {
                1.0
            };
            for (&(slot, _), w) in pattern.iter().zip(weights) {
                values[slot] += w * renormalise;
            }
        }
        for (entry, v) in self.now.iter_mut().zip(values) {
            entry.1 = v as f32;
        }
    }
}

/// Sources: K per step at each padded voxel, ascending, and the power deposited (W);
/// power falling into sinks is carried away.
fn source_terms(
    problem: &Problem,
    padding: &Padding,
    dt: f64,
    h_m: f64,
) -> Result<(SourceTerms, f64), AblationError> {
    let volume_m3 = h_m * h_m * h_m;
    let mut deposited_w = 0.0;
    let mut per_source = Vec::with_capacity(problem.sources.len());
    for s in &problem.sources {
        let mut pattern = Vec::new();
        for (o, w) in s.deposit(&problem.grid)? {
            if problem.sink[o] {
                continue;
            }
            let t = &problem.tissues[problem.tissue_of_voxel[o] as usize];
            let rc = t.density_kg_m3 * t.heat_capacity_j_kg_k;
            pattern.push((padding.pad(o), w / volume_m3 * dt / rc));
            deposited_w += w;
        }
        per_source.push((matches!(s, Source::Microwave { .. }), pattern));
    }
    let mut indices: Vec<usize> = per_source
        .iter()
        .flat_map(|(_, p)| p.iter().map(|e| e.0))
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let slot_of = |q: usize| indices.binary_search(&q).unwrap_or_default();
    let patterns: Vec<(bool, Vec<(usize, f64)>)> = per_source
        .into_iter()
        .map(|(dehydrates, p)| {
            (
                dehydrates,
                p.into_iter().map(|(q, k)| (slot_of(q), k)).collect(),
            )
        })
        .collect();
    let mut now: Vec<(usize, f32)> = indices.iter().map(|&q| (q, 0.0)).collect();
    let mut values = vec![0f64; now.len()];
    for (_, pattern) in &patterns {
        for &(slot, k) in pattern {
            values[slot] += k;
        }
    }
    for (entry, v) in now.iter_mut().zip(values) {
        entry.1 = v as f32;
    }
    Ok((SourceTerms { now, patterns }, deposited_w))
}

/// The damage integrator's constants and the body-temperature rates (Ω per s, CEM43 min
/// per s).
fn damage_kernel(settings: &Settings, dt: f64) -> (DamageKernel, (f64, f64)) {
    let arrhenius = settings.arrhenius;
    let base_rates = (
        arrhenius.rate_per_s(BODY_TEMPERATURE_C),
        cem43_rate_min_per_s(BODY_TEMPERATURE_C),
    );
    let kernel = DamageKernel {
        ln_a: arrhenius.frequency_factor_per_s.ln() as f32,
        ea_over_r: (arrhenius.activation_energy_j_mol / crate::damage::GAS_CONSTANT_J_MOL_K) as f32,
        body_c: BODY_TEMPERATURE_C as f32,
        dt: dt as f32,
        dt_f64: dt,
        base: (base_rates.0 as f32, base_rates.1 as f32),
        base_omega_per_s: base_rates.0,
        stop_perfusion: settings.perfusion_stops_at_coagulation,
    };
    (kernel, base_rates)
}

/// Every step, `settings.steps_per_sweep` at a time; perfusion stops found in a sweep
/// take effect before the next.
fn march(
    fields: &mut Fields,
    sources: &mut SourceTerms,
    kernel: &DamageKernel,
    padding: &Padding,
    steps: &TimeSteps,
    settings: &Settings,
) {
    let physics = settings.physics;
    let nonlinear = physics.is_nonlinear();
    let boiling_rise_k = physics
        .vaporisation
        .map(|v| (v.temperature_c - BODY_TEMPERATURE_C) as f32);
    let mut next = fields.theta.clone();
    // The field the stencil reads: θ, or its Kirchhoff transform U(θ) when conductivity
    // depends on temperature (see `nonlinear_coefficients`).
    let kirchhoff = physics.conductivity_rise_per_k != 0.0;
    let mut stencil_input = if kirchhoff {
        fields.theta.clone()
    } else {
        Vec::new()
    };
    if nonlinear {
        // The first step's coefficients (and U) from the initial temperatures.
        nonlinear_coefficients(fields, &physics, kirchhoff.then_some(&mut stencil_input));
    }
    let total_steps = steps.total();
    let per_sweep = if nonlinear {
        1
    } else {
        settings.steps_per_sweep.max(1)
    };
    let mut step = 0;
    while step < total_steps {
        let levels = per_sweep.min(total_steps - step);
        let Fields {
            coef_a,
            coef_c,
            state,
            theta,
            latent_left,
            ..
        } = &mut *fields;
        let sweep = Sweep {
            a: coef_a,
            sources: &sources.now,
            dims: padding.dims,
            heat_steps: steps.heat_steps,
        };
        let damage = settings.damage.then_some((kernel, &mut *state));
        let vapour = boiling_rise_k.map(|b| (latent_left.as_mut_slice(), b));
        let input: &[f32] = if kirchhoff { &stencil_input } else { theta };
        let stopped = sweep.advance(input, &mut next, coef_c, damage, vapour, step, levels);
        if !nonlinear {
            for (q, p) in stopped {
                coef_c[q] += p;
            }
        }
        std::mem::swap(theta, &mut next);
        step += levels;
        if nonlinear {
            nonlinear_coefficients(fields, &physics, kirchhoff.then_some(&mut stencil_input));
            if step < steps.heat_steps {
                sources.reweight(fields, &physics);
            }
        }
    }
}

/// The next step's coefficients under nonlinear physics. Perfusion: c = 1 − 6a − p (p
/// is 0 where it stopped). Temperature-dependent conductivity (`kirchhoff`, the buffer
/// for U): conservatively through the Kirchhoff transform, ∇·(k∇T) = k₃₇∇²U, so the
/// step is θ' = (1 − p)·θ − 6a·U + a·ΣU_neighbour + s: the stencil reads U and its
/// centre coefficient is c = (1 − p)·θ/U − 6a. Halo and sinks keep c = 0 (and U = 0).
fn nonlinear_coefficients(
    fields: &mut Fields,
    physics: &Physics,
    kirchhoff: Option<&mut Vec<f32>>,
) {
    let Fields {
        coef_a,
        coef_c,
        coef_c_body,
        state,
        theta,
        ..
    } = fields;
    let coefficients = coef_c
        .par_iter_mut()
        .zip(coef_c_body.par_iter())
        .zip(coef_a.par_iter())
        .zip(theta.par_iter())
        .zip(state.p.par_iter());
    match kirchhoff {
        None => coefficients.for_each(|((((c, &c_body), _), _), &p)| {
            if c_body > 0.0 {
                *c = c_body - p;
            }
        }),
        Some(u) => {
            coefficients
                .zip(u.par_iter_mut())
                .for_each(|(((((c, &c_body), &a), &t), &p), u)| {
                    if c_body > 0.0 {
                        let big_u = physics.kirchhoff(f64::from(t));
                        *u = big_u as f32;
                        let ratio = if big_u > 0.0 {
                            f64::from(t) / big_u
                        } else {
                            1.0
                        };
                        *c = ((1.0 - f64::from(p)) * ratio) as f32 - 6.0 * a;
                    }
                })
        }
    }
}

/// Back to the interior, in grid order: temperatures, peaks and damage (the
/// body-temperature part added for the elapsed time). `deposited_w` and `stepping_s`
/// are left 0 for the caller.
fn read_back(
    problem: &Problem,
    settings: &Settings,
    fields: &Fields,
    padding: &Padding,
    base_rates: (f64, f64),
    steps: &TimeSteps,
) -> Solution {
    let Fields { state, theta, .. } = fields;
    let (dt, heat_steps, cool_steps) = (steps.dt, steps.heat_steps, steps.cool_steps);
    let elapsed_s = dt * steps.total() as f64;
    let grid = &problem.grid;
    let n = grid.voxel_count();
    let interior =
        |f: &dyn Fn(usize) -> f32| -> Vec<f32> { (0..n).map(|o| f(padding.pad(o))).collect() };
    let body = BODY_TEMPERATURE_C as f32;
    let temperature = interior(&|q| body + theta[q]);
    let peak = if settings.damage {
        interior(&|q| body + state.peak_rise[q].max(theta[q]))
    } else {
        temperature.clone()
    };
    let max_temperature_c = peak.iter().copied().fold(f32::MIN, f32::max) as f64;
    let (omega, cem43) = if settings.damage {
        (
            Some(volume_from(
                grid,
                interior(&|q| (f64::from(state.omega_excess[q]) + base_rates.0 * elapsed_s) as f32),
                0.0,
            )),
            Some(volume_from(
                grid,
                interior(&|q| {
                    (f64::from(state.cem43_excess_min[q]) + base_rates.1 * elapsed_s) as f32
                }),
                0.0,
            )),
        )
    } else {
        (None, None)
    };
    Solution {
        temperature_c: volume_from(grid, temperature, body),
        peak_temperature_c: volume_from(grid, peak, body),
        omega,
        cem43_min: cem43,
        dt_s: dt,
        steps: heat_steps + cool_steps,
        simulated_s: dt * (heat_steps + cool_steps) as f64,
        deposited_w: 0.0,
        max_temperature_c,
        stepping_s: 0.0,
    }
}

/// One explicit step on padded arrays: `out = c·θ + a·Σ₆θ` for every interior voxel.
/// Rayon splits the grid into z-slabs; each row is a straight loop LLVM vectorises.
pub fn stencil_step(theta: &[f32], out: &mut [f32], a: &[f32], c: &[f32], dims: [usize; 3]) {
    let [nx, ny, nz] = dims;
    let sz = (nx + 2) * (ny + 2);
    out.par_chunks_mut(sz).enumerate().for_each(|(k, slab)| {
        if k == 0 || k > nz {
            return;
        }
        let around = [k - 1, k, k + 1].map(|m| &theta[m * sz..(m + 1) * sz]);
        let coef = k * sz..(k + 1) * sz;
        stencil_slab(around, slab, &a[coef.clone()], &c[coef], nx, ny);
    });
}

/// One step of one z-slab: `out` from the slabs below, at and above it (all padded
/// `(nx + 2) × (ny + 2)`); the padding of `out` is left untouched.
fn stencil_slab(around: [&[f32]; 3], out: &mut [f32], a: &[f32], c: &[f32], nx: usize, ny: usize) {
    let sy = nx + 2;
    let [below, here, above] = around;
    for j in 1..=ny {
        let b = j * sy + 1;
        let row = &mut out[b..b + nx];
        let t0 = &here[b..b + nx];
        let xm = &here[b - 1..b - 1 + nx];
        let xp = &here[b + 1..b + 1 + nx];
        let ym = &here[b - sy..b - sy + nx];
        let yp = &here[b + sy..b + sy + nx];
        let zm = &below[b..b + nx];
        let zp = &above[b..b + nx];
        let ra = &a[b..b + nx];
        let rc = &c[b..b + nx];
        for i in 0..nx {
            row[i] = rc[i] * t0[i] + ra[i] * ((xm[i] + xp[i]) + (ym[i] + yp[i]) + (zm[i] + zp[i]));
        }
    }
}

/// Constants of the damage integration (float32: ln A − Ea/RT ≈ −8 keeps ~1e-6 relative
/// precision, and CEM43's R^(43 − T) = 2^(m·(T − 43)), m = 1 or 2).
struct DamageKernel {
    ln_a: f32,
    ea_over_r: f32,
    body_c: f32,
    dt: f32,
    dt_f64: f64,
    base: (f32, f32),
    base_omega_per_s: f64,
    stop_perfusion: bool,
}

/// Damage arrays of one thread's slabs (the same range of the padded grid in each).
struct DamageSlices<'a> {
    omega_excess: &'a mut [f32],
    cem43_excess_min: &'a mut [f32],
    peak_rise: &'a mut [f32],
    p: &'a mut [f32],
}

impl DamageKernel {
    /// Accrues one step of damage over `theta` (a slab after step `step`), the arrays
    /// starting at the same voxel. Voxels whose perfusion stops are appended to
    /// `stopped` as (offset within the slab, p).
    fn accrue(
        &self,
        theta: &[f32],
        d: &mut DamageSlices<'_>,
        step: usize,
        stopped: &mut Vec<(usize, f32)>,
    ) {
        let baseline_omega = self.base_omega_per_s * self.dt_f64 * (step + 1) as f64;
        for (i, &t) in theta.iter().enumerate() {
            if t < WARM_K {
                continue;
            }
            if t > d.peak_rise[i] {
                d.peak_rise[i] = t;
            }
            let tc = self.body_c + t;
            let rate = (self.ln_a - self.ea_over_r / (tc + ZERO_CELSIUS_K as f32)).exp();
            d.omega_excess[i] += (rate - self.base.0) * self.dt;
            let m = if tc >= 43.0 { 1.0f32 } else { 2.0 };
            d.cem43_excess_min[i] += ((m * (tc - 43.0)).exp2() / 60.0 - self.base.1) * self.dt;
            if self.stop_perfusion
                && d.p[i] > 0.0
                && f64::from(d.omega_excess[i]) + baseline_omega >= 1.0
            {
                stopped.push((i, d.p[i]));
                d.p[i] = 0.0;
            }
        }
    }
}

/// What stays fixed during a sweep.
struct Sweep<'a> {
    a: &'a [f32],
    /// Source rise per heating step (K) at padded indices, ascending.
    sources: &'a [(usize, f32)],
    dims: [usize; 3],
    heat_steps: usize,
}

impl Sweep<'_> {
    /// Advances `theta` by `levels` steps (from step `first_step`) into `out`; `c` is
    /// read-only during the sweep, and the perfusion stops found on the way are
    /// returned as (padded index, p) to be added to `c` before the next sweep.
    ///
    /// Every thread owns a contiguous z-range and carries it through all levels in a
    /// wavefront (level s of slab k right after level s − 1 of slab k + 1), keeping four
    /// slabs per intermediate level; the first levels also cover up to `levels − 1`
    /// slabs of the neighbours' ranges so that each range's last level is exact.
    /// `vapour` (latent heat left per voxel, boiling rise in K) needs `levels == 1`.
    #[allow(clippy::too_many_arguments)]
    fn advance(
        &self,
        theta: &[f32],
        out: &mut [f32],
        c: &[f32],
        damage: Option<(&DamageKernel, &mut DamageState)>,
        vapour: Option<(&mut [f32], f32)>,
        first_step: usize,
        levels: usize,
    ) -> Vec<(usize, f32)> {
        debug_assert!(vapour.is_none() || levels == 1);
        let [nx, ny, nz] = self.dims;
        let sz = (nx + 2) * (ny + 2);
        let parts = rayon::current_num_threads().clamp(1, nz.max(1));
        let bounds: Vec<usize> = (0..=parts).map(|t| 1 + t * nz / parts).collect();
        let ranges: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let kernel = damage.as_ref().map(|(k, _)| *k);
        let damage_parts: Vec<Option<DamageSlices<'_>>> = match damage {
            Some((_, st)) => {
                let om = split_slabs(&mut st.omega_excess, &bounds, sz);
                let cem = split_slabs(&mut st.cem43_excess_min, &bounds, sz);
                let peak = split_slabs(&mut st.peak_rise, &bounds, sz);
                let p = split_slabs(&mut st.p, &bounds, sz);
                om.into_iter()
                    .zip(cem)
                    .zip(peak)
                    .zip(p)
                    .map(|(((omega_excess, cem43_excess_min), peak_rise), p)| {
                        Some(DamageSlices {
                            omega_excess,
                            cem43_excess_min,
                            peak_rise,
                            p,
                        })
                    })
                    .collect()
            }
            None => ranges.iter().map(|_| None).collect(),
        };
        let vapour_parts: Vec<Option<(&mut [f32], f32)>> = match vapour {
            Some((latent, boiling)) => split_slabs(latent, &bounds, sz)
                .into_iter()
                .map(|part| Some((part, boiling)))
                .collect(),
            None => ranges.iter().map(|_| None).collect(),
        };
        let tasks: Vec<_> = ranges
            .iter()
            .zip(split_slabs(out, &bounds, sz))
            .zip(damage_parts)
            .zip(vapour_parts)
            .map(|(((&r, o), d), v)| (r, o, d, v))
            .collect();
        tasks
            .into_par_iter()
            .map(|(range, owned, dmg, vap)| {
                let dmg = kernel.zip(dmg);
                self.advance_range(theta, owned, c, dmg, vap, range, first_step, levels)
            })
            .reduce(Vec::new, |mut x, y| {
                x.extend(y);
                x
            })
    }

    /// One thread's part of [`Sweep::advance`]: slabs `z0..z1`, written to `owned`
    /// (those slabs of the output).
    #[allow(clippy::too_many_arguments)]
    fn advance_range(
        &self,
        theta: &[f32],
        owned: &mut [f32],
        c: &[f32],
        mut damage: Option<(&DamageKernel, DamageSlices<'_>)>,
        mut vapour: Option<(&mut [f32], f32)>,
        (z0, z1): (usize, usize),
        first_step: usize,
        levels: usize,
    ) -> Vec<(usize, f32)> {
        const RING: usize = 4;
        let [nx, ny, nz] = self.dims;
        let sz = (nx + 2) * (ny + 2);
        let zero = vec![0f32; sz];
        let mut ring = vec![0f32; (levels - 1) * RING * sz];
        let mut stopped = Vec::new();
        // Slabs computed at level s (1-based): z0 − (levels − s) .. z1 + (levels − s),
        // clipped to the interior 1..=nz.
        let span = |s: usize| {
            let extra = levels - s;
            (z0.saturating_sub(extra).max(1), (z1 + extra).min(nz + 1))
        };
        let (first, last) = span(1);
        for tick in first..last + levels - 1 {
            for s in 1..=levels {
                let Some(k) = tick.checked_sub(s - 1) else {
                    break;
                };
                let (lo, hi) = span(s);
                if k < lo || k >= hi {
                    continue;
                }
                let (done, rest) = ring.split_at_mut((s - 1) * RING * sz);
                let input = |m: usize| -> &[f32] {
                    if s == 1 {
                        &theta[m * sz..(m + 1) * sz]
                    } else if m == 0 || m == nz + 1 {
                        &zero
                    } else {
                        let slot = ((s - 2) * RING + m % RING) * sz;
                        &done[slot..slot + sz]
                    }
                };
                let around = [input(k - 1), input(k), input(k + 1)];
                let target: &mut [f32] = if s == levels {
                    &mut owned[(k - z0) * sz..(k - z0 + 1) * sz]
                } else {
                    let slot = (k % RING) * sz;
                    &mut rest[slot..slot + sz]
                };
                let coef = k * sz..(k + 1) * sz;
                stencil_slab(around, target, &self.a[coef.clone()], &c[coef], nx, ny);
                let step = first_step + s - 1;
                if step < self.heat_steps {
                    let from = self.sources.partition_point(|&(o, _)| o < k * sz);
                    let to = self.sources.partition_point(|&(o, _)| o < (k + 1) * sz);
                    for &(o, rise) in &self.sources[from..to] {
                        target[o - k * sz] += rise;
                    }
                }
                if let Some((latent, boiling_rise_k)) = vapour.as_mut() {
                    if s == levels && (z0..z1).contains(&k) {
                        let at = (k - z0) * sz..(k - z0 + 1) * sz;
                        vaporise(target, &mut latent[at], *boiling_rise_k);
                    }
                }
                if let Some((kernel, d)) = damage.as_mut() {
                    if (z0..z1).contains(&k) {
                        let at = (k - z0) * sz..(k - z0 + 1) * sz;
                        let mut slab = DamageSlices {
                            omega_excess: &mut d.omega_excess[at.clone()],
                            cem43_excess_min: &mut d.cem43_excess_min[at.clone()],
                            peak_rise: &mut d.peak_rise[at.clone()],
                            p: &mut d.p[at],
                        };
                        let before = stopped.len();
                        kernel.accrue(target, &mut slab, step, &mut stopped);
                        for entry in &mut stopped[before..] {
                            entry.0 += k * sz;
                        }
                    }
                }
            }
        }
        stopped
    }
}

/// The slabs `bounds[t]..bounds[t + 1]` of a padded array as disjoint mutable slices.
fn split_slabs<'a>(data: &'a mut [f32], bounds: &[usize], sz: usize) -> Vec<&'a mut [f32]> {
    let (_, mut rest) = data.split_at_mut(bounds[0] * sz);
    let mut parts = Vec::with_capacity(bounds.len());
    for w in bounds.windows(2) {
        let (part, tail) = rest.split_at_mut((w[1] - w[0]) * sz);
        parts.push(part);
        rest = tail;
    }
    parts
}
