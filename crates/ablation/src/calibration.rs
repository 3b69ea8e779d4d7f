//! Source models calibrated against zone tables: a device's `[device.simulation]`
//! section (with its `[device.simulation.model]`) says how its applicator heats in the bioheat simulation, and
//! [`calibrate`] simulates every row of its table in homogeneous liver and compares the
//! simulated zone's axes with the table's.
//!
//! A row passes when both simulated axes lie within [`CALIBRATION_TOLERANCE_PCT`] of the
//! table. The free parameters are the source's, not the tissue's: the fraction of the
//! generator's power that heats tissue (`efficiency`: cable and antenna losses, reflected
//! power) and the shape of the absorption pattern. Tissue, perfusion and the nonlinear
//! physics ([`crate::physics::Physics::TISSUE`]) are fixed.

use pinhole_volume::{Grid, Vec3};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bioheat::{self, Problem, Settings, Source, Tissue};
use crate::damage::Criterion;
use crate::devices::{Device, DeviceTable, Modality, ZoneEntry};
use crate::error::{invalid, positive, AblationError};
use crate::zone::Applicator;

/// Simulated axes must lie within this of the table's, %.
pub const CALIBRATION_TOLERANCE_PCT: f64 = 15.0;

/// How an applicator deposits power in the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "pattern", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceModel {
    /// [`Source::Microwave`]'s Gaussian tear-drop with `efficiency` × the set power.
    Microwave {
        efficiency: f64,
        hotspot_behind_tip_mm: f64,
        sigma_axial_mm: f64,
        sigma_radial_mm: f64,
    },
    /// [`Source::LaserLine`]: `efficiency` × the set power along `length_mm` ending at
    /// the tip.
    LaserLine { efficiency: f64, length_mm: f64 },
}

impl SourceModel {
    /// The uncalibrated defaults of [`Source::microwave`] / [`Source::laser`].
    pub fn default_for(modality: Modality) -> Self {
        match modality {
            Modality::Laser => SourceModel::LaserLine {
                efficiency: 1.0,
                length_mm: 10.0,
            },
            _ => SourceModel::Microwave {
                efficiency: 1.0,
                hotspot_behind_tip_mm: 8.0,
                sigma_axial_mm: 8.0,
                sigma_radial_mm: 4.0,
            },
        }
    }

    /// The source of an applicator at `power_w` (set on the generator).
    pub fn source(&self, applicator: Applicator, power_w: f64) -> Source {
        match *self {
            SourceModel::Microwave {
                efficiency,
                hotspot_behind_tip_mm,
                sigma_axial_mm,
                sigma_radial_mm,
            } => Source::Microwave {
                applicator,
                power_w: power_w * efficiency,
                hotspot_behind_tip_mm,
                sigma_axial_mm,
                sigma_radial_mm,
            },
            SourceModel::LaserLine {
                efficiency,
                length_mm,
            } => Source::LaserLine {
                applicator,
                power_w: power_w * efficiency,
                length_mm,
            },
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AblationError> {
        let efficiency = match *self {
            SourceModel::Microwave {
                efficiency,
                hotspot_behind_tip_mm,
                sigma_axial_mm,
                sigma_radial_mm,
            } => {
                positive("sigma_axial_mm", sigma_axial_mm)?;
                positive("sigma_radial_mm", sigma_radial_mm)?;
                if !hotspot_behind_tip_mm.is_finite() {
                    return Err(invalid(
                        "hotspot_behind_tip_mm",
                        format!("got {hotspot_behind_tip_mm}"),
                    ));
                }
                efficiency
            }
            SourceModel::LaserLine {
                efficiency,
                length_mm,
            } => {
                positive("length_mm", length_mm)?;
                efficiency
            }
        };
        if !(efficiency > 0.0 && efficiency <= 1.0) {
            return Err(invalid(
                "efficiency",
                format!("must be in (0, 1], got {efficiency}"),
            ));
        }
        Ok(())
    }
}

/// The model to simulate `modality` with when no device is named: the first device of
/// `table` with that modality and a calibrated model (its name and calibration note
/// returned), else [`SourceModel::default_for`] with no calibration.
pub fn default_model(table: &DeviceTable, modality: Modality) -> (SourceModel, Option<String>) {
    table
        .devices
        .iter()
        .filter(|d| d.modality == modality)
        .find_map(|d| {
            d.simulation.as_ref().map(|sim| {
                (
                    sim.model,
                    Some(format!("{} model: {}", d.name, sim.calibrated)),
                )
            })
        })
        .unwrap_or((SourceModel::default_for(modality), None))
}

/// The calibrated model of device `name`, with its calibration note.
pub fn device_model(
    table: &DeviceTable,
    name: &str,
) -> Result<(Modality, SourceModel, String), AblationError> {
    let device = table.device(name)?;
    let sim = device.simulation.as_ref().ok_or_else(|| {
        invalid(
            "device simulation model",
            format!(
                "device {name:?} has no [device.simulation] section: its source model is not \
                 calibrated, so it cannot be simulated (see `ablation-calibrate` in BENCHMARKS.md)"
            ),
        )
    })?;
    Ok((
        device.modality,
        sim.model,
        format!("{name} model: {}", sim.calibrated),
    ))
}

/// A device's calibrated simulation model (`[device.simulation]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSimulation {
    /// `[device.simulation.model]`.
    pub model: SourceModel,
    /// Perfusion under which the table was measured, 1/s (0: ex vivo); absent: the
    /// in-vivo liver value of [`Tissue::liver`]. Only the calibration uses it: plans
    /// simulate in-vivo tissue.
    #[serde(default)]
    pub table_perfusion_per_s: Option<f64>,
    /// How the model was calibrated (command, date, result).
    pub calibrated: String,
}

impl DeviceSimulation {
    /// The tissue the table's zones were measured in: liver, with the table's perfusion.
    pub fn table_tissue(&self) -> Tissue {
        let mut tissue = Tissue::liver();
        if let Some(p) = self.table_perfusion_per_s {
            tissue.perfusion_per_s = p;
            tissue.name = format!("liver, perfusion {p} 1/s (the table's conditions)");
        }
        tissue
    }
}

/// The zone a simulation produced, measured like a table row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SimulatedZone {
    pub long_axis_mm: f64,
    pub short_axis_mm: f64,
    pub beyond_tip_mm: f64,
    pub max_temperature_c: f64,
    pub volume_ml: f64,
}

/// Simulates one applicator (`model` at `power_w` for `minutes`) in homogeneous `tissue`
/// on a `grid_mm` grid, with the default settings (tissue physics, perfusion stop,
/// Arrhenius zone), and measures the zone along and across the applicator.
pub fn simulate_zone(
    model: &SourceModel,
    tissue: &Tissue,
    power_w: f64,
    minutes: f64,
    grid_mm: f64,
) -> Result<SimulatedZone, AblationError> {
    model.validate()?;
    positive("power_w", power_w)?;
    positive("minutes", minutes)?;
    positive("grid_mm", grid_mm)?;
    // The applicator runs along +S; the tip sits so that 25 mm lie beyond it and 65 mm
    // behind it, 35 mm either side (zones up to ~45 mm plus ≥ 3 perfusion lengths).
    let n_side = (35.0 / grid_mm).round() as usize;
    let (n_ahead, n_behind) = (
        (25.0 / grid_mm).round() as usize,
        (65.0 / grid_mm).round() as usize,
    );
    let dims = [2 * n_side + 1, 2 * n_side + 1, n_ahead + n_behind + 1];
    let origin = [
        -(n_side as f64) * grid_mm,
        -(n_side as f64) * grid_mm,
        -(n_behind as f64) * grid_mm,
    ];
    let grid = Grid::axis_aligned(dims, [grid_mm; 3], origin)?;
    let applicator = Applicator::new([0.0; 3], [0.0, 0.0, 1.0])?;
    let mut problem = Problem::homogeneous(grid, tissue.clone());
    problem.sources.push(model.source(applicator, power_w));
    let settings = Settings {
        duration_s: minutes * 60.0,
        ..Settings::default()
    };
    let solution = bioheat::solve(&problem, &settings)?;
    let mask = solution.ablated(Criterion::Arrhenius);
    let grid = mask.grid().clone();
    let mut extent: Option<(f64, f64, f64)> = None;
    let mut voxels = 0usize;
    for (o, _) in mask.data().iter().enumerate().filter(|(_, &b)| b) {
        voxels += 1;
        let p: Vec3 = grid.index_to_world(grid.index_of_offset(o).map(|v| v as f64));
        let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
        let (lo, hi, rmax) = extent.unwrap_or((p[2], p[2], r));
        extent = Some((lo.min(p[2]), hi.max(p[2]), rmax.max(r)));
    }
    let (lo, hi, rmax) = extent.unwrap_or((0.0, -grid_mm, -grid_mm / 2.0));
    Ok(SimulatedZone {
        long_axis_mm: hi - lo + grid_mm,
        short_axis_mm: 2.0 * rmax + grid_mm,
        beyond_tip_mm: (hi + grid_mm / 2.0).max(0.0),
        max_temperature_c: solution.max_temperature_c,
        volume_ml: voxels as f64 * grid_mm.powi(3) / 1000.0,
    })
}

/// One table row against its simulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CalibrationRow {
    pub device: String,
    pub table: ZoneEntry,
    pub simulated: SimulatedZone,
    /// (simulated − table) / table, %.
    pub long_axis_error_pct: f64,
    pub short_axis_error_pct: f64,
}

impl CalibrationRow {
    /// Both axes within [`CALIBRATION_TOLERANCE_PCT`].
    pub fn passes(&self) -> bool {
        self.long_axis_error_pct.abs() <= CALIBRATION_TOLERANCE_PCT
            && self.short_axis_error_pct.abs() <= CALIBRATION_TOLERANCE_PCT
    }
}

/// Simulates every row of `device` with `model` in `tissue`.
pub fn calibrate_device(
    device: &Device,
    model: &SourceModel,
    tissue: &Tissue,
    grid_mm: f64,
) -> Result<Vec<CalibrationRow>, AblationError> {
    device
        .zones
        .iter()
        .map(|row| {
            let simulated = simulate_zone(model, tissue, row.power_w, row.minutes, grid_mm)?;
            let pct = |sim: f64, table: f64| 100.0 * (sim - table) / table;
            Ok(CalibrationRow {
                device: device.name.clone(),
                table: *row,
                long_axis_error_pct: pct(simulated.long_axis_mm, row.long_axis_mm),
                short_axis_error_pct: pct(simulated.short_axis_mm, row.short_axis_mm),
                simulated,
            })
        })
        .collect()
}

/// Every row of every device that has a `[device.simulation]` model; the names of the
/// devices without one are returned beside.
pub fn calibrate(
    table: &DeviceTable,
    grid_mm: f64,
) -> Result<(Vec<CalibrationRow>, Vec<String>), AblationError> {
    let mut rows = Vec::new();
    let mut uncalibrated = Vec::new();
    for device in &table.devices {
        match &device.simulation {
            Some(sim) => rows.extend(calibrate_device(
                device,
                &sim.model,
                &sim.table_tissue(),
                grid_mm,
            )?),
            None => uncalibrated.push(device.name.clone()),
        }
    }
    Ok((rows, uncalibrated))
}

/// The calibration as a Markdown table.
pub fn markdown(rows: &[CalibrationRow]) -> String {
    let mut out = String::from(
        "| device | W | min | table long × short (mm) | simulated long × short (mm) | error long / short | beyond tip table / sim (mm) | peak °C |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} × {:.0} | {:.0} × {:.0} | {:+.1} % / {:+.1} % | {:.1} / {:.1} | {:.0} |\n",
            r.device,
            r.table.power_w,
            r.table.minutes,
            r.table.long_axis_mm,
            r.table.short_axis_mm,
            r.simulated.long_axis_mm,
            r.simulated.short_axis_mm,
            r.long_axis_error_pct,
            r.short_axis_error_pct,
            r.table.beyond_tip_mm,
            r.simulated.beyond_tip_mm,
            r.simulated.max_temperature_c,
        ));
    }
    out
}
