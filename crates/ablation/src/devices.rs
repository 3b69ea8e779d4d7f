//! Device zone tables: per device, the ellipsoidal ablation zone reached at a given power
//! and time. Shipped entries are **examples** (see `devices/example_zones.toml` for their
//! source), not vendor claims; users pass their own table with the same layout.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{positive, AblationError};

/// The example table shipped with Pinhole (TOML).
pub const EXAMPLE_TABLE_TOML: &str = include_str!("../devices/example_zones.toml");

/// How the applicator heats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Microwave,
    Radiofrequency,
    Laser,
    Cryo,
}

/// One row of a device's table: the zone reached at `power_w` after `minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneEntry {
    pub power_w: f64,
    pub minutes: f64,
    /// Zone length along the applicator axis, mm.
    pub long_axis_mm: f64,
    /// Zone diameter across the applicator axis, mm.
    pub short_axis_mm: f64,
    /// How far the zone reaches beyond the applicator tip along the axis, mm.
    pub beyond_tip_mm: f64,
}

/// A device and its zone table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub name: String,
    pub modality: Modality,
    /// True for illustrative entries that are not vendor claims.
    #[serde(default)]
    pub example: bool,
    /// Where the numbers come from.
    pub source: String,
    #[serde(rename = "zone")]
    pub zones: Vec<ZoneEntry>,
    /// The calibrated bioheat source model (`[device.simulation]`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulation: Option<crate::calibration::DeviceSimulation>,
}

/// A table of devices, as read from TOML (`[[device]]` with `[[device.zone]]` rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceTable {
    #[serde(rename = "device")]
    pub devices: Vec<Device>,
}

/// The zone chosen for a device, power and time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ZoneLookup {
    pub device: String,
    pub modality: Modality,
    pub example: bool,
    pub source: String,
    pub zone: ZoneEntry,
    /// True when `zone` was interpolated in time between two table rows.
    pub interpolated: bool,
}

impl DeviceTable {
    /// The shipped example table.
    pub fn builtin() -> Result<Self, AblationError> {
        Self::parse(EXAMPLE_TABLE_TOML, "built-in example_zones.toml")
    }

    /// Parses and validates a TOML table; `origin` names it in errors (e.g. a path).
    pub fn parse(text: &str, origin: &str) -> Result<Self, AblationError> {
        let table: DeviceTable = toml::from_str(text).map_err(|e| AblationError::DeviceTable {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        table
            .validate()
            .map_err(|message| AblationError::DeviceTable {
                origin: origin.to_string(),
                message,
            })?;
        Ok(table)
    }

    fn validate(&self) -> Result<(), String> {
        if self.devices.is_empty() {
            return Err("no [[device]] entries".into());
        }
        for d in &self.devices {
            if d.zones.is_empty() {
                return Err(format!("device {:?} has no [[device.zone]] rows", d.name));
            }
            if let Some(sim) = &d.simulation {
                sim.model
                    .validate()
                    .map_err(|e| format!("device {:?} [device.simulation]: {e}", d.name))?;
            }
            for z in &d.zones {
                let values = [
                    ("power_w", z.power_w),
                    ("minutes", z.minutes),
                    ("long_axis_mm", z.long_axis_mm),
                    ("short_axis_mm", z.short_axis_mm),
                ];
                for (what, v) in values {
                    positive(what, v).map_err(|e| format!("device {:?}: {e}", d.name))?;
                }
                if !z.beyond_tip_mm.is_finite()
                    || z.beyond_tip_mm < 0.0
                    || z.beyond_tip_mm > z.long_axis_mm
                {
                    return Err(format!(
                        "device {:?}: beyond_tip_mm {} must lie in 0..=long_axis_mm ({})",
                        d.name, z.beyond_tip_mm, z.long_axis_mm
                    ));
                }
            }
        }
        Ok(())
    }

    /// The device called `name`.
    pub fn device(&self, name: &str) -> Result<&Device, AblationError> {
        self.devices
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| AblationError::UnknownDevice {
                name: name.to_string(),
                known: self
                    .devices
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The zone of device `name` at `power_w` (must match a table power within 0.5 W)
    /// after `minutes`: a table row, or linear interpolation in time between the two
    /// rows that bracket it at that power. No extrapolation.
    pub fn lookup(
        &self,
        name: &str,
        power_w: f64,
        minutes: f64,
    ) -> Result<ZoneLookup, AblationError> {
        let device = self.device(name)?;
        let mut rows: Vec<ZoneEntry> = device
            .zones
            .iter()
            .copied()
            .filter(|z| (z.power_w - power_w).abs() <= 0.5)
            .collect();
        if rows.is_empty() {
            let mut powers: Vec<f64> = device.zones.iter().map(|z| z.power_w).collect();
            powers.sort_by(f64::total_cmp);
            powers.dedup();
            return Err(AblationError::NoZoneForPower {
                name: name.to_string(),
                power_w,
                available: powers
                    .iter()
                    .map(|p| format!("{p}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        rows.sort_by(|a, b| a.minutes.total_cmp(&b.minutes));
        let make = |zone: ZoneEntry, interpolated: bool| ZoneLookup {
            device: device.name.clone(),
            modality: device.modality,
            example: device.example,
            source: device.source.clone(),
            zone,
            interpolated,
        };
        if let Some(exact) = rows.iter().find(|z| (z.minutes - minutes).abs() < 1e-9) {
            return Ok(make(*exact, false));
        }
        for pair in rows.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a.minutes < minutes && minutes < b.minutes {
                let f = (minutes - a.minutes) / (b.minutes - a.minutes);
                let mix = |x: f64, y: f64| x + f * (y - x);
                return Ok(make(
                    ZoneEntry {
                        power_w: a.power_w,
                        minutes,
                        long_axis_mm: mix(a.long_axis_mm, b.long_axis_mm),
                        short_axis_mm: mix(a.short_axis_mm, b.short_axis_mm),
                        beyond_tip_mm: mix(a.beyond_tip_mm, b.beyond_tip_mm),
                    },
                    true,
                ));
            }
        }
        let first = rows.first().map_or(0.0, |z| z.minutes);
        let last = rows.last().map_or(0.0, |z| z.minutes);
        Err(AblationError::TimeOutsideTable {
            name: name.to_string(),
            power_w,
            minutes,
            min_minutes: first,
            max_minutes: last,
        })
    }
}
