//! The whole planning pipeline on an analysis grid: zones from a device table or from a
//! bioheat simulation, coverage and margins, heat sinks, placement.

use pinhole_volume::{Grid, Interpolation, Mask, Vec3, Volume};
use serde::Serialize;

use crate::bioheat::{self, Problem, Settings, Source, Tissue, BLOOD};
use crate::coverage::{self, Coverage, HeatSink};
use crate::damage::Criterion;
use crate::devices::{Modality, ZoneEntry, ZoneLookup};
use crate::error::{positive, AblationError};
use crate::placement::{self, mask_points};
use crate::zone::{add, scale, sub, union_mask, Applicator, EllipsoidZone};

/// Vessel diameter at or above which a nearby vessel is flagged as a heat sink, mm.
pub const HEAT_SINK_MIN_DIAMETER_MM: f64 = 3.0;
/// Distance from the tumour within which vessels are checked, mm.
pub const HEAT_SINK_MAX_DISTANCE_MM: f64 = 10.0;
/// Coverage of tumour + margin at which placement stops adding applicators.
pub const PLACEMENT_GOAL_FRACTION: f64 = 0.99;

/// True for label names of vessels large enough to be labelled in a CT segmentation
/// (TotalSegmentator-style names: aorta, vena cava, portal/splenic vein, arteries, veins).
pub fn is_vessel_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "aorta",
        "vena_cava",
        "vein",
        "vena",
        "artery",
        "arteries",
        "trunk",
        "hepatic_vessel",
    ]
    .iter()
    .any(|k| n.contains(k))
}

/// An axis-aligned LPS grid with isotropic `spacing_mm` covering the bounding box of
/// `region`'s voxels grown by `pad_mm`.
pub fn analysis_grid(region: &Mask, pad_mm: f64, spacing_mm: f64) -> Result<Grid, AblationError> {
    positive("analysis grid spacing", spacing_mm)?;
    let grid = region.grid();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for (o, _) in region.data().iter().enumerate().filter(|(_, &b)| b) {
        let ijk = grid.index_of_offset(o).map(|v| v as f64);
        for corner in 0..8 {
            let c = [0, 1, 2].map(|a| {
                if corner & (1 << a) == 0 {
                    ijk[a] - 0.5
                } else {
                    ijk[a] + 0.5
                }
            });
            let p = grid.index_to_world(c);
            for a in 0..3 {
                lo[a] = lo[a].min(p[a]);
                hi[a] = hi[a].max(p[a]);
            }
        }
    }
    if !lo[0].is_finite() {
        return Err(AblationError::EmptyTumor);
    }
    let dims = [0, 1, 2].map(|a| ((hi[a] - lo[a] + 2.0 * pad_mm) / spacing_mm).ceil() as usize + 1);
    let origin = [0, 1, 2].map(|a| lo[a] - pad_mm);
    Ok(Grid::axis_aligned(dims, [spacing_mm; 3], origin)?)
}

/// How zones are obtained.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Ellipsoid from a device table row.
    Device(ZoneLookup),
    /// Pennes bioheat simulation: one applicator, or more when one zone falls short of
    /// tumour + margin (placed with the simulated zone as model, then simulated together).
    Simulate {
        modality: Modality,
        power_w: f64,
        minutes: f64,
        criterion: Criterion,
        settings: Settings,
    },
}

/// Everything the planner needs, on one analysis grid.
#[derive(Debug, Clone)]
pub struct Request {
    /// Label map resampled to the analysis grid (isotropic, axis-aligned).
    pub labels: Volume<u16>,
    /// Tumour on the analysis grid.
    pub tumor: Mask,
    pub margin_mm: f64,
    /// Vessel labels (id, name): heat-sink checks and, in simulations, 37 °C sinks.
    pub vessels: Vec<(u32, String)>,
    /// Liver label id, if any (tissue class "liver"; everything else uses `other_tissue`).
    pub liver_id: Option<u32>,
    pub liver: Tissue,
    pub other_tissue: Tissue,
    /// A planned needle path `(entry, target)` in LPS mm.
    pub path: Option<(Vec3, Vec3)>,
    pub mode: Mode,
    pub max_applicators: usize,
}

/// A placed applicator and its zone.
#[derive(Debug, Clone, Serialize)]
pub struct PlacedZone {
    pub tip_lps: Vec3,
    pub axis_lps: Vec3,
    /// Zone centre and size (device mode: the table ellipsoid; simulate mode: the extent
    /// of the simulated zone measured along and across the axis).
    pub center_lps: Vec3,
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    pub volume_ml: f64,
}

/// Summary of a simulation run.
#[derive(Debug, Clone, Serialize)]
pub struct SimulationSummary {
    pub modality: Modality,
    pub power_w: f64,
    pub deposited_w: f64,
    pub minutes: f64,
    pub dt_s: f64,
    pub steps: usize,
    pub max_temperature_c: f64,
    pub zone_volume_arrhenius_ml: f64,
    pub zone_volume_cem43_ml: f64,
    pub liver: Tissue,
    pub other_tissue: Tissue,
    pub blood: bioheat::Blood,
    pub sink_voxels: usize,
    /// Applicators heating together (each at `power_w`).
    pub applicators: usize,
    /// The first applicator's source (the others are the same, moved).
    pub source: Source,
    pub simplifications: &'static str,
}

/// The simplifications of the bioheat model, for reports.
pub const SIMULATION_SIMPLIFICATIONS: &str = "Pennes bioheat, explicit 7-point finite differences on the isotropic analysis grid; \
constant tissue properties (liver values from COMSOL microwave_cancer_therapy; other tissue uses the same values); \
labelled vessels held at 37 C (heat sinks); grid faces at 37 C; microwave = ellipsoidal Gaussian SAR pattern normalised to the power \
(no EM solve), laser = line source; no vaporisation, charring or temperature-dependent properties; perfusion stops where Omega >= 1; \
all power given is deposited in tissue.";

/// The plan.
#[derive(Debug, Clone)]
pub struct Plan {
    pub zones: Vec<PlacedZone>,
    pub zone_mask: Mask,
    pub margin_region: Mask,
    pub coverage: Coverage,
    pub heat_sinks: Vec<HeatSink>,
    pub criterion: String,
    /// Covered fraction of tumour + margin after 1, 2, ... applicators (device mode: by
    /// the table's ellipsoids; simulate mode: simulated with that many applicators).
    pub covered_fraction_by_count: Vec<f64>,
    pub simulation: Option<SimulationSummary>,
    pub temperature_c: Option<Volume<f32>>,
}

/// Runs the plan.
pub fn plan(request: &Request) -> Result<Plan, AblationError> {
    if !(request.margin_mm.is_finite() && request.margin_mm >= 0.0) {
        return Err(crate::error::invalid(
            "margin_mm",
            format!("must be finite and >= 0, got {}", request.margin_mm),
        ));
    }
    let tumor = &request.tumor;
    let grid = tumor.grid().clone();
    let tumor_points = mask_points(tumor, 1);
    if tumor_points.is_empty() {
        return Err(AblationError::EmptyTumor);
    }
    let region = coverage::margin_region(tumor, request.margin_mm);
    let region_all = mask_points(&region, 1);
    let stride = region_all.len().div_ceil(6000).max(1);
    let region_points: Vec<Vec3> = region_all.iter().copied().step_by(stride).collect();
    let axis = match request.path {
        Some((entry, target)) => crate::zone::unit(sub(target, entry))?,
        None => placement::principal_axis(&tumor_points),
    };

    let (zones, zone_mask, criterion, by_count, simulation, temperature) = match &request.mode {
        Mode::Device(lookup) => {
            let entry = &lookup.zone;
            let first = match request.path {
                Some((e, t)) => placement::best_depth(e, t, entry, &region_points, &tumor_points)?,
                None => {
                    let c = centroid(&tumor_points);
                    Applicator {
                        tip_lps: EllipsoidZone::tip_for_center(c, axis, entry),
                        axis_lps: axis,
                    }
                }
            };
            let placed = placement::greedy_cover(
                axis,
                entry,
                &region_points,
                Some(first),
                request.max_applicators,
                PLACEMENT_GOAL_FRACTION,
            )?;
            let mask = union_mask(&grid, &placed.zones);
            let zones = placed
                .applicators
                .iter()
                .zip(&placed.zones)
                .map(|(a, z)| PlacedZone {
                    tip_lps: a.tip_lps,
                    axis_lps: a.axis_lps,
                    center_lps: z.center_lps,
                    long_axis_mm: z.long_axis_mm,
                    short_axis_mm: z.short_axis_mm,
                    volume_ml: z.volume_ml(),
                })
                .collect();
            let criterion = format!(
                "device zone table: {} at {} W, {} min{} ({}; {})",
                lookup.device,
                lookup.zone.power_w,
                lookup.zone.minutes,
                if lookup.interpolated {
                    ", interpolated in time"
                } else {
                    ""
                },
                if lookup.example {
                    "EXAMPLE entry, not a vendor claim"
                } else {
                    "user table"
                },
                lookup.source
            );
            (
                zones,
                mask,
                criterion,
                placed.covered_fraction_by_count,
                None,
                None,
            )
        }
        Mode::Simulate {
            modality,
            power_w,
            minutes,
            criterion,
            settings,
        } => {
            let c = centroid(&tumor_points);
            let centre = match request.path {
                Some((e, _)) => add(e, scale(axis, pinhole_volume::math::dot(sub(c, e), axis))),
                None => c,
            };
            let tip_ahead_mm = if *modality == Modality::Laser {
                5.0
            } else {
                8.0
            };
            let first = Applicator {
                tip_lps: add(centre, scale(axis, tip_ahead_mm)),
                axis_lps: axis,
            };
            let source_at = |a: Applicator| match modality {
                Modality::Laser => Source::laser(a, *power_w),
                _ => Source::microwave(a, *power_w),
            };
            let mut settings = settings.clone();
            settings.duration_s = minutes * 60.0;
            settings.damage = true;
            let simulate = |applicators: &[Applicator]| -> Result<_, AblationError> {
                let sources = applicators.iter().map(|&a| source_at(a)).collect();
                let problem = build_problem(request, &grid, sources)?;
                let solution = bioheat::solve(&problem, &settings)?;
                let mask = solution.ablated(*criterion);
                let covered = region
                    .data()
                    .iter()
                    .zip(mask.data())
                    .filter(|(&r, &m)| r && m)
                    .count() as f64
                    / region_all.len().max(1) as f64;
                Ok((problem, solution, mask, covered))
            };
            let (mut problem, mut solution, mut mask, single_covered) = simulate(&[first])?;
            let (center, long, short) = extent_along(&mask, first.tip_lps, axis);
            let mut applicators = vec![first];
            let mut by_count = vec![single_covered];
            // One zone short of the goal: place more applicators with the simulated
            // single zone as the ellipsoid model, then simulate them heating together.
            if single_covered < PLACEMENT_GOAL_FRACTION && request.max_applicators > 1 && long > 0.0
            {
                let along = pinhole_volume::math::dot(sub(center, first.tip_lps), axis);
                let model = ZoneEntry {
                    power_w: *power_w,
                    minutes: *minutes,
                    long_axis_mm: long,
                    short_axis_mm: short,
                    beyond_tip_mm: along + long / 2.0,
                };
                let placed = placement::greedy_cover(
                    axis,
                    &model,
                    &region_points,
                    Some(first),
                    request.max_applicators,
                    PLACEMENT_GOAL_FRACTION,
                )?;
                for n in 2..=placed.applicators.len() {
                    let run = simulate(&placed.applicators[..n])?;
                    by_count.push(run.3);
                    (problem, solution, mask) = (run.0, run.1, run.2);
                    applicators = placed.applicators[..n].to_vec();
                    if run.3 >= PLACEMENT_GOAL_FRACTION {
                        break;
                    }
                }
            }
            let voxel_ml = grid.voxel_volume_mm3() / 1000.0;
            let vol = |m: &Mask| m.data().iter().filter(|&&b| b).count() as f64 * voxel_ml;
            let arr = solution.ablated(Criterion::Arrhenius);
            let cem = solution.ablated(Criterion::Cem43);
            // Each applicator's zone: the single simulated zone moved with it (the joint
            // zone is `zone_mask`).
            let zones = applicators
                .iter()
                .map(|a| {
                    let shift = sub(a.tip_lps, first.tip_lps);
                    PlacedZone {
                        tip_lps: a.tip_lps,
                        axis_lps: a.axis_lps,
                        center_lps: add(center, shift),
                        long_axis_mm: long,
                        short_axis_mm: short,
                        volume_ml: vol(&mask) / applicators.len() as f64,
                    }
                })
                .collect();
            let summary = SimulationSummary {
                modality: *modality,
                power_w: *power_w,
                deposited_w: solution.deposited_w,
                minutes: *minutes,
                dt_s: solution.dt_s,
                steps: solution.steps,
                max_temperature_c: solution.max_temperature_c,
                zone_volume_arrhenius_ml: vol(&arr),
                zone_volume_cem43_ml: vol(&cem),
                liver: request.liver.clone(),
                other_tissue: request.other_tissue.clone(),
                blood: BLOOD,
                sink_voxels: problem.sink.iter().filter(|&&s| s).count(),
                applicators: applicators.len(),
                source: source_at(first),
                simplifications: SIMULATION_SIMPLIFICATIONS,
            };
            (
                zones,
                mask,
                format!("simulation: {}", criterion.describe()),
                by_count,
                Some(summary),
                Some(solution.temperature_c),
            )
        }
    };
    let cov = coverage::coverage(tumor, &zone_mask, request.margin_mm)?;
    let sinks = coverage::heat_sinks(
        &request.labels,
        tumor,
        &request.vessels,
        HEAT_SINK_MIN_DIAMETER_MM,
        HEAT_SINK_MAX_DISTANCE_MM,
    );
    Ok(Plan {
        zones,
        zone_mask,
        margin_region: region,
        coverage: cov,
        heat_sinks: sinks,
        criterion,
        covered_fraction_by_count: by_count,
        simulation,
        temperature_c: temperature,
    })
}

fn centroid(points: &[Vec3]) -> Vec3 {
    let n = points.len().max(1) as f64;
    scale(points.iter().fold([0.0; 3], |a, p| add(a, *p)), 1.0 / n)
}

/// The bioheat problem on the analysis grid: liver / other tissue per label, vessel sinks.
fn build_problem(
    request: &Request,
    grid: &Grid,
    sources: Vec<Source>,
) -> Result<Problem, AblationError> {
    let labels = &request.labels;
    let vessel_ids: Vec<u16> = request
        .vessels
        .iter()
        .filter_map(|(id, _)| u16::try_from(*id).ok())
        .collect();
    let liver = request.liver_id.and_then(|id| u16::try_from(id).ok());
    let mut problem = Problem::homogeneous(grid.clone(), request.liver.clone());
    problem.tissues.push(request.other_tissue.clone());
    for (o, &l) in labels.data().iter().enumerate() {
        let is_liver = Some(l) == liver || request.tumor.data()[o];
        problem.tissue_of_voxel[o] = if is_liver { 0 } else { 1 };
        problem.sink[o] = l != 0 && vessel_ids.contains(&l) && !request.tumor.data()[o];
    }
    problem.sources = sources;
    Ok(problem)
}

/// Centre and full extents of `mask` along `axis` and across it (max radial distance ×2),
/// measured from the line through `through` along `axis`.
fn extent_along(mask: &Mask, through: Vec3, axis: Vec3) -> (Vec3, f64, f64) {
    let pts = mask_points(mask, 1);
    if pts.is_empty() {
        return (through, 0.0, 0.0);
    }
    let h = mask.grid().spacing_mm()[0];
    let mut tmin = f64::INFINITY;
    let mut tmax = f64::NEG_INFINITY;
    let mut rmax: f64 = 0.0;
    for p in &pts {
        let d = sub(*p, through);
        let t = pinhole_volume::math::dot(d, axis);
        tmin = tmin.min(t);
        tmax = tmax.max(t);
        let r2 = (pinhole_volume::math::dot(d, d) - t * t).max(0.0);
        rmax = rmax.max(r2.sqrt());
    }
    let center = add(through, scale(axis, (tmin + tmax) / 2.0));
    (center, tmax - tmin + h, 2.0 * rmax + h)
}

/// Resamples a label map onto the analysis grid (nearest neighbour).
pub fn labels_on(grid: &Grid, labels: &Volume<u16>) -> Volume<u16> {
    labels.resample(grid, Interpolation::Nearest, 0)
}
