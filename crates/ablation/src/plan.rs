//! The whole planning pipeline on an analysis grid: zones from a device table or from a
//! bioheat simulation, coverage and margins, heat sinks, placement.

use pinhole_volume::{Grid, Interpolation, Mask, Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bioheat::{self, Problem, Settings, Source, Tissue, BLOOD};
use crate::calibration::SourceModel;
use crate::coverage::{self, Coverage, HeatSink};
use crate::damage::Criterion;
use crate::devices::{Modality, ZoneEntry, ZoneLookup};
use crate::error::{positive, AblationError};
use crate::physics::Physics;
use crate::placement::{self, mask_points};
use crate::zone::{add, scale, sub, union_mask, Applicator, EllipsoidZone};

/// Vessel diameter at or above which a nearby vessel is flagged as a heat sink, mm.
pub const HEAT_SINK_MIN_DIAMETER_MM: f64 = 3.0;
/// Distance from the tumour within which vessels are checked, mm.
pub const HEAT_SINK_MAX_DISTANCE_MM: f64 = 10.0;
/// Coverage of tumour + margin at which placement stops adding applicators.
pub const PLACEMENT_GOAL_FRACTION: f64 = 0.99;

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
        /// How the applicator deposits its power (a device's calibrated model, or the
        /// modality's default).
        model: SourceModel,
        /// How `model` was calibrated (None: not calibrated against any zone table).
        calibration: Option<String>,
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
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
    /// The first applicator's source (the others are the same, moved); its power is
    /// the part of `power_w` the calibrated model deposits in tissue.
    pub source: Source,
    /// How the source model was calibrated against a zone table (None: it was not, and
    /// the zone's size is unvalidated).
    pub calibration: Option<String>,
    /// The tissue physics: vaporisation, temperature-dependent conductivity,
    /// dehydration (see `pinhole_ablation::physics`). Reports before schema version 2
    /// have none: they were simulated with linear Pennes.
    #[serde(default = "linear_physics")]
    pub physics: Physics,
    pub simplifications: String,
}

fn linear_physics() -> Physics {
    Physics::LINEAR
}

/// The simplifications of the bioheat model, for reports.
pub const SIMULATION_SIMPLIFICATIONS: &str = "Pennes bioheat, explicit 7-point finite differences on the isotropic analysis grid; \
liver values from COMSOL microwave_cancer_therapy (other tissue uses the same values); \
tissue water vaporises at 100 C (latent heat), conductivity rises with temperature to 90 C, microwave absorption falls as tissue dries; \
perfusion stops where Omega >= 1; labelled vessels held at 37 C (heat sinks); grid faces at 37 C; \
microwave = ellipsoidal Gaussian SAR pattern (no EM solve) with the calibrated fraction of the set power, laser = line source; \
no vapour transport, charring or tissue contraction.";

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
    check_margin(request.margin_mm)?;
    let target = Target::of(request)?;
    let zones = match &request.mode {
        Mode::Device(lookup) => device_zones(request, &target, lookup)?,
        Mode::Simulate {
            modality,
            model,
            calibration,
            power_w,
            minutes,
            criterion,
            settings,
        } => {
            let heating = Heating {
                modality: *modality,
                model,
                calibration: calibration.as_deref(),
                power_w: *power_w,
                minutes: *minutes,
                criterion: *criterion,
                settings,
            };
            simulated_zones(request, &target, &heating)?
        }
    };
    let tumor = &request.tumor;
    let cov = coverage::coverage(tumor, &zones.zone_mask, request.margin_mm)?;
    let mut sinks = coverage::heat_sinks(
        &request.labels,
        tumor,
        &request.vessels,
        HEAT_SINK_MIN_DIAMETER_MM,
        HEAT_SINK_MAX_DISTANCE_MM,
    );
    coverage::assess_threatened_margins(
        &mut sinks,
        &request.labels,
        tumor,
        &zones.zone_mask,
        request.margin_mm,
        HEAT_SINK_MAX_DISTANCE_MM,
    );
    Ok(Plan {
        zones: zones.zones,
        zone_mask: zones.zone_mask,
        margin_region: target.region,
        coverage: cov,
        heat_sinks: sinks,
        criterion: zones.criterion,
        covered_fraction_by_count: zones.by_count,
        simulation: zones.simulation,
        temperature_c: zones.temperature,
    })
}

fn check_margin(margin_mm: f64) -> Result<(), AblationError> {
    if !(margin_mm.is_finite() && margin_mm >= 0.0) {
        return Err(crate::error::invalid(
            "margin_mm",
            format!("must be finite and >= 0, got {margin_mm}"),
        ));
    }
    Ok(())
}

/// What is to be covered: the tumour, tumour + margin, and the needle axis.
struct Target {
    grid: Grid,
    tumor_points: Vec<Vec3>,
    /// Tumour + margin.
    region: Mask,
    /// Voxels of `region` (the coverage denominator).
    region_voxels: usize,
    /// At most about 6000 of `region`'s voxel centres, for placement.
    region_points: Vec<Vec3>,
    /// The planned path's direction, else the tumour's principal axis.
    axis: Vec3,
}

impl Target {
    fn of(request: &Request) -> Result<Self, AblationError> {
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
        Ok(Self {
            grid,
            tumor_points,
            region,
            region_voxels: region_all.len(),
            region_points,
            axis,
        })
    }
}

/// Zones and what they came from, in either mode.
struct Zones {
    zones: Vec<PlacedZone>,
    zone_mask: Mask,
    criterion: String,
    by_count: Vec<f64>,
    simulation: Option<SimulationSummary>,
    temperature: Option<Volume<f32>>,
}

/// Device mode: the table's ellipsoid at the best depth along the path (or centred on
/// the tumour), then greedy cover.
fn device_zones(
    request: &Request,
    target: &Target,
    lookup: &ZoneLookup,
) -> Result<Zones, AblationError> {
    let entry = &lookup.zone;
    let axis = target.axis;
    let first = match request.path {
        Some((e, t)) => {
            placement::best_depth(e, t, entry, &target.region_points, &target.tumor_points)?
        }
        None => {
            let c = centroid(&target.tumor_points);
            Applicator {
                tip_lps: EllipsoidZone::tip_for_center(c, axis, entry),
                axis_lps: axis,
            }
        }
    };
    let placed = placement::greedy_cover(
        axis,
        entry,
        &target.region_points,
        Some(first),
        request.max_applicators,
        PLACEMENT_GOAL_FRACTION,
    )?;
    let mask = union_mask(&target.grid, &placed.zones);
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
    Ok(Zones {
        zones,
        zone_mask: mask,
        criterion: device_criterion(lookup),
        by_count: placed.covered_fraction_by_count,
        simulation: None,
        temperature: None,
    })
}

fn device_criterion(lookup: &ZoneLookup) -> String {
    format!(
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
    )
}

/// Simulate mode's heating: per applicator.
struct Heating<'a> {
    modality: Modality,
    model: &'a SourceModel,
    calibration: Option<&'a str>,
    power_w: f64,
    minutes: f64,
    criterion: Criterion,
    settings: &'a Settings,
}

impl Heating<'_> {
    fn source_at(&self, a: Applicator) -> Source {
        self.model.source(a, self.power_w)
    }
}

/// One bioheat run: the problem, its solution, the ablated zone and the covered
/// fraction of tumour + margin.
struct Run {
    problem: Problem,
    solution: bioheat::Solution,
    mask: Mask,
    covered: f64,
}

/// Simulates `applicators` heating together.
fn simulate_run(
    request: &Request,
    target: &Target,
    heating: &Heating,
    settings: &Settings,
    applicators: &[Applicator],
) -> Result<Run, AblationError> {
    let sources = applicators.iter().map(|&a| heating.source_at(a)).collect();
    let problem = build_problem(request, &target.grid, sources)?;
    let solution = bioheat::solve(&problem, settings)?;
    let mask = solution.ablated(heating.criterion);
    let covered = target
        .region
        .data()
        .iter()
        .zip(mask.data())
        .filter(|(&r, &m)| r && m)
        .count() as f64
        / target.region_voxels.max(1) as f64;
    Ok(Run {
        problem,
        solution,
        mask,
        covered,
    })
}

/// Simulate mode: one applicator a little ahead of the tumour centre (on the path when
/// there is one); when its zone falls short of the goal, more applicators placed with
/// the simulated single zone as the ellipsoid model, then simulated heating together.
fn simulated_zones(
    request: &Request,
    target: &Target,
    heating: &Heating,
) -> Result<Zones, AblationError> {
    let axis = target.axis;
    let first = first_simulated_applicator(request, target, heating.modality);
    let mut settings = heating.settings.clone();
    settings.duration_s = heating.minutes * 60.0;
    settings.damage = true;
    let simulate =
        |applicators: &[Applicator]| simulate_run(request, target, heating, &settings, applicators);
    let mut run = simulate(&[first])?;
    let (center, long, short) = extent_along(&run.mask, first.tip_lps, axis);
    let mut applicators = vec![first];
    let mut by_count = vec![run.covered];
    // One zone short of the goal: place more applicators with the simulated
    // single zone as the ellipsoid model, then simulate them heating together.
    if run.covered < PLACEMENT_GOAL_FRACTION && request.max_applicators > 1 && long > 0.0 {
        let along = pinhole_volume::math::dot(sub(center, first.tip_lps), axis);
        let model = ZoneEntry {
            power_w: heating.power_w,
            minutes: heating.minutes,
            long_axis_mm: long,
            short_axis_mm: short,
            beyond_tip_mm: along + long / 2.0,
        };
        let placed = placement::greedy_cover(
            axis,
            &model,
            &target.region_points,
            Some(first),
            request.max_applicators,
            PLACEMENT_GOAL_FRACTION,
        )?;
        for n in 2..=placed.applicators.len() {
            let joint = simulate(&placed.applicators[..n])?;
            by_count.push(joint.covered);
            let done = joint.covered >= PLACEMENT_GOAL_FRACTION;
            run = joint;
            applicators = placed.applicators[..n].to_vec();
            if done {
                break;
            }
        }
    }
    let voxel_ml = target.grid.voxel_volume_mm3() / 1000.0;
    let vol = |m: &Mask| m.data().iter().filter(|&&b| b).count() as f64 * voxel_ml;
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
                volume_ml: vol(&run.mask) / applicators.len() as f64,
            }
        })
        .collect();
    let summary = simulation_summary(request, heating, &run, &applicators, first, &vol);
    Ok(Zones {
        zones,
        zone_mask: run.mask,
        criterion: format!("simulation: {}", heating.criterion.describe()),
        by_count,
        simulation: Some(summary),
        temperature: Some(run.solution.temperature_c),
    })
}

/// The first simulated applicator: its tip 8 mm (laser: 5 mm) beyond the tumour centroid
/// (projected onto the path when there is one), along the axis.
fn first_simulated_applicator(
    request: &Request,
    target: &Target,
    modality: Modality,
) -> Applicator {
    let axis = target.axis;
    let c = centroid(&target.tumor_points);
    let centre = match request.path {
        Some((e, _)) => add(e, scale(axis, pinhole_volume::math::dot(sub(c, e), axis))),
        None => c,
    };
    let tip_ahead_mm = if modality == Modality::Laser {
        5.0
    } else {
        8.0
    };
    Applicator {
        tip_lps: add(centre, scale(axis, tip_ahead_mm)),
        axis_lps: axis,
    }
}

fn simulation_summary(
    request: &Request,
    heating: &Heating,
    run: &Run,
    applicators: &[Applicator],
    first: Applicator,
    vol: &dyn Fn(&Mask) -> f64,
) -> SimulationSummary {
    let solution = &run.solution;
    let arr = solution.ablated(Criterion::Arrhenius);
    let cem = solution.ablated(Criterion::Cem43);
    SimulationSummary {
        modality: heating.modality,
        power_w: heating.power_w,
        deposited_w: solution.deposited_w,
        minutes: heating.minutes,
        dt_s: solution.dt_s,
        steps: solution.steps,
        max_temperature_c: solution.max_temperature_c,
        zone_volume_arrhenius_ml: vol(&arr),
        zone_volume_cem43_ml: vol(&cem),
        liver: request.liver.clone(),
        other_tissue: request.other_tissue.clone(),
        blood: BLOOD,
        sink_voxels: run.problem.sink.iter().filter(|&&s| s).count(),
        applicators: applicators.len(),
        source: heating.source_at(first),
        calibration: heating.calibration.map(str::to_owned),
        physics: heating.settings.physics,
        simplifications: SIMULATION_SIMPLIFICATIONS.to_owned(),
    }
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
