//! B-mode ultrasound simulated from CT, after Wein et al. 2008 ("Automatic CT-ultrasound
//! registration for diagnostic imaging and image-guided intervention", MedIA 12(5)).
//!
//! For every scan line (beam) of a linear or convex probe the CT is sampled trilinearly
//! along the beam (ITK's inside test and border clamping, as [`crate::reslice`](mod@crate::reslice); outside
//! the volume: air). Each sample's HU value gives, through lookup tables built once per
//! [`Simulator`]:
//!
//! * a tissue class and its speed of sound `c` (air 343, fat 1450, fluid 1530, soft tissue
//!   1540, bone 3500 m/s; thresholds [`AIR_BELOW_HU`], [`FAT_BELOW_HU`],
//!   [`FLUID_BELOW_HU`], [`BONE_FROM_HU`]), a density `ρ = 1 + HU/1000` g/cm³ (air:
//!   0.0012) and the acoustic impedance `Z = ρ·c`;
//! * an attenuation `α` (dB/cm/MHz: air 40, i.e. opaque, standing for the lost coupling;
//!   fat 0.6, fluid 0.2, soft tissue 0.7, bone 20);
//! * an echogenicity (backscatter amplitude; 0 in air, low in fluid, rising with HU in
//!   soft tissue), uncalibrated.
//!
//! Along the beam, the intensity reflected at sample `k` is `R = ((Z_k − Z_{k−1}) /
//! (Z_k + Z_{k−1}))²` (the change of impedance along the beam: Wein's specular term),
//! the transmitted intensity is multiplied by `1 − R` and by the two-way attenuation of
//! the sample's tissue over one sample step, so that bone and air shadow everything
//! behind them. The echo amplitude is `√I · (√R + s·e(HU)·n)`, `n` speckle: the
//! magnitude of a moving sum of complex Gaussians over one wavelength along the beam
//! (Rayleigh-distributed, mean 1, correlated over the pulse length), from a seeded
//! xorshift generator (one stream per beam: the frame is the same for the same seed
//! whatever the thread count); scan lines are one per two wavelengths by default, so
//! speckle is also correlated across them after scan conversion. Time-gain compensation adds back
//! the two-way attenuation of soft tissue at the sample's depth (capped at
//! [`MAX_TGC_DB`]); log compression maps `[−dynamic range, 0] dB` (plus the gain) to
//! `0..=255`. Beams are then scan-converted (bilinear in beam angle or position and depth)
//! to a square-pixel image; pixels outside the scanned region (the fan of a convex probe)
//! are 0.
//!
//! The image's `ImageToLps` comes with it as an [`ImagePlane`]: `x` along the array
//! (`lateral`), `y` along the beams (`beam`, deeper downwards), pixel `(i, j)` centred at
//! `origin + i·col_x + j·col_y`, so the simulated frame can be fused with, and tested
//! against, [`crate::reslice`](mod@crate::reslice) on the same plane.
//!
//! Not modelled: refraction (straight beams at one speed of sound), reverberation, beam
//! width and focusing (lateral speckle size comes from the line spacing only), the angle dependence
//! of specular reflection beyond the change along the beam. Contrast-filled vessels above
//! [`BONE_FROM_HU`] are taken for bone.

use pinhole_volume::math::{cross, dot, mat3_inverse, mat3_mul_vec, norm, Vec3};
use pinhole_volume::{Grid, Volume};
use rayon::prelude::*;

use crate::plane::{ImagePlane, PlaneError, MAX_PIXELS};
use crate::reslice::Cells;

/// HU below which a sample is air (lung, bowel gas, outside the body).
pub const AIR_BELOW_HU: f32 = -400.0;
/// HU below which a non-air sample is fat.
pub const FAT_BELOW_HU: f32 = -30.0;
/// HU below which a non-fat sample is fluid (bile, urine, cysts, unenhanced blood).
pub const FLUID_BELOW_HU: f32 = 20.0;
/// HU from which a sample is bone (and iodine contrast above it).
pub const BONE_FROM_HU: f32 = 300.0;
/// Largest time-gain compensation applied (dB), as a scanner's TGC range.
pub const MAX_TGC_DB: f64 = 100.0;
/// Soft tissue attenuation (dB/cm/MHz); time-gain compensation undoes exactly this.
pub const SOFT_TISSUE_ATTENUATION_DB_CM_MHZ: f64 = 0.7;

/// Lowest HU of the lookup tables (values below are clamped).
const LUT_MIN_HU: i32 = -1024;
/// Number of lookup-table entries (one per HU up to 3071).
const LUT_LEN: usize = 4096;
/// Scatter amplitude of echogenicity 1, relative to a total reflector (−30 dB).
const SCATTER_AMPLITUDE: f32 = 0.0316;
/// Entries of the Rayleigh and phase tables (each indexed by 10 random bits).
const RAYLEIGH_BITS: u32 = 10;
/// Longest speckle correlation along a beam (samples).
const MAX_SPECKLE_SAMPLES: usize = 32;
/// Speed of sound of soft tissue (mm/µs): wavelength = this / frequency.
const SOFT_TISSUE_SPEED_MM_US: f64 = 1.54;
/// Largest depth accepted (mm).
const MAX_DEPTH_MM: f64 = 500.0;
/// Largest number of scan lines or samples per line accepted.
const MAX_LINES: usize = 8192;

/// The transducer's geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Probe {
    /// Parallel beams over `width_mm` of array (the image plane is the beam plane).
    Linear { width_mm: f64 },
    /// A fan of beams from a curved array of `radius_mm`, over `fov_deg` (0 < fov < 180).
    Convex { radius_mm: f64, fov_deg: f64 },
}

/// Simulation parameters: probe, depth, frequency, output size, display settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimulationParams {
    pub probe: Probe,
    /// Imaging depth below the transducer face (mm), 0 < depth ≤ 500.
    pub depth_mm: f64,
    /// Centre frequency (MHz), 1 ≤ f ≤ 20: scales the attenuation.
    pub frequency_mhz: f64,
    /// Output image width and height (pixels; square pixels sized to fit the scan).
    pub width_px: usize,
    pub height_px: usize,
    /// Number of scan lines; `None`: one per two wavelengths (about the lateral
    /// resolution) across the scan's widest extent, at most one per output pixel.
    pub line_count: Option<usize>,
    /// Overall gain (dB), −60…60.
    pub gain_db: f64,
    /// Displayed dynamic range (dB), 10…120: `[−range, 0] dB` → `0..=255`.
    pub dynamic_range_db: f64,
    /// Time-gain compensation of soft tissue attenuation.
    pub tgc: bool,
    /// Seed of the speckle generator.
    pub seed: u64,
}

impl Default for SimulationParams {
    /// A 3.5 MHz abdominal convex probe (60 mm radius, 60° fan, 150 mm deep), 512 × 512.
    fn default() -> Self {
        Self {
            probe: Probe::Convex {
                radius_mm: 60.0,
                fov_deg: 60.0,
            },
            depth_mm: 150.0,
            frequency_mhz: 3.5,
            width_px: 512,
            height_px: 512,
            line_count: None,
            gain_db: 0.0,
            dynamic_range_db: 60.0,
            tgc: true,
            seed: 0,
        }
    }
}

/// Where the probe is: the centre of the transducer face and its axes (LPS).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbePose {
    /// Centre of the transducer face (for a convex probe, the middle of its arc), LPS mm.
    pub centre_lps: Vec3,
    /// The central beam's direction (into the patient), LPS; need not be unit length.
    pub beam_lps: Vec3,
    /// The array's direction: the image's `+x`, LPS; made orthogonal to the beam.
    pub lateral_lps: Vec3,
}

/// Why a simulation was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimulateError {
    #[error("{name} must be finite, got {value}")]
    NonFinite { name: &'static str, value: f64 },
    #[error("{name} = {value} is out of range: expected {expected}")]
    OutOfRange {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    #[error("{name} must not be zero, got {value:?}")]
    ZeroVector { name: &'static str, value: Vec3 },
    #[error("lateral_lps {lateral:?} is parallel to beam_lps {beam:?}")]
    ParallelAxes { beam: Vec3, lateral: Vec3 },
    #[error(transparent)]
    Plane(#[from] PlaneError),
    #[error("the CT's voxel → LPS matrix cannot be inverted")]
    SingularGrid,
}

/// A simulated frame: 8-bit B-mode pixels, row-major (`i` fastest), and where they lie.
#[derive(Debug, Clone, PartialEq)]
pub struct SimulatedFrame {
    /// `pixels[i + width·j]`: pixel `(i, j)`, 0 outside the scanned region.
    pub pixels: Vec<u8>,
    /// The frame's `ImageToLps` and size.
    pub plane: ImagePlane,
}

/// Per-HU tissue properties, for one frequency and sample step.
#[derive(Debug, Clone, Copy, Default)]
struct Tissue {
    /// Acoustic impedance (MRayl).
    impedance: f32,
    /// Two-way attenuation over one sample step (dB).
    loss_db: f32,
    /// Scatter amplitude (relative to a total reflector).
    scatter: f32,
}

/// Speed of sound (m/s), density (g/cm³), attenuation (dB/cm/MHz), echogenicity of `hu`.
fn tissue_properties(hu: f32) -> (f64, f64, f64, f64) {
    let h = f64::from(hu);
    let rho = (1.0 + h / 1000.0).max(0.0012);
    // Echogenicity: piecewise linear in HU (uncalibrated; fluid anechoic, fat and
    // parenchyma mid-grey, dense tissue brighter).
    let ramp = |h0: f64, e0: f64, h1: f64, e1: f64| e0 + (e1 - e0) * ((h - h0) / (h1 - h0));
    if hu < AIR_BELOW_HU {
        (343.0, 0.0012, 40.0, 0.0)
    } else if hu < FAT_BELOW_HU {
        (1450.0, rho, 0.6, ramp(-400.0, 0.3, -30.0, 0.45))
    } else if hu < FLUID_BELOW_HU {
        (1530.0, rho, 0.2, 0.03)
    } else if hu < BONE_FROM_HU {
        let e = if h < 80.0 {
            ramp(20.0, 0.35, 80.0, 0.6)
        } else {
            ramp(80.0, 0.6, 300.0, 1.0)
        };
        (1540.0, rho, SOFT_TISSUE_ATTENUATION_DB_CM_MHZ, e)
    } else {
        (3500.0, rho, 20.0, 1.0)
    }
}

/// The probe's scan geometry in its own frame: `u` lateral, `v` along the central beam
/// from the transducer centre (mm).
#[derive(Debug, Clone, Copy)]
enum Scan {
    Linear { half_width_mm: f64 },
    Convex { radius_mm: f64, half_fov_rad: f64 },
}

/// A reusable simulator: parameters checked, lookup tables and the scan conversion built
/// once; [`Simulator::simulate`] then renders frames for any pose and CT.
#[derive(Debug, Clone)]
pub struct Simulator {
    params: SimulationParams,
    scan: Scan,
    lines: usize,
    samples: usize,
    /// Sample step along a beam (mm).
    step_mm: f64,
    /// Output pixel size (mm, square).
    pixel_mm: f64,
    /// `v` of pixel row 0's centre, `u` of column 0's centre (mm).
    top_v_mm: f64,
    left_u_mm: f64,
    tissue: Vec<Tissue>,
    /// Rayleigh quantiles (σ = 1) and unit phasors: a complex Gaussian sample each.
    rayleigh: Vec<f32>,
    phase: Vec<[f32; 2]>,
    /// Speckle correlation length along a beam (samples: one wavelength) and the factor
    /// making the correlated envelope's mean 1.
    speckle_samples: usize,
    speckle_norm: f32,
    /// Time-gain compensation + gain (dB) per sample index.
    gain_db: Vec<f32>,
    /// Per output pixel: offset of its lower beam-space neighbour and the bilinear
    /// fractions (beam, sample); `u32::MAX` outside the scan.
    map: Vec<(u32, f32, f32)>,
}

fn finite(name: &'static str, value: f64) -> Result<f64, SimulateError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(SimulateError::NonFinite { name, value })
    }
}

fn in_range(
    name: &'static str,
    value: f64,
    ok: bool,
    expected: &'static str,
) -> Result<(), SimulateError> {
    finite(name, value)?;
    if ok {
        Ok(())
    } else {
        Err(SimulateError::OutOfRange {
            name,
            value,
            expected,
        })
    }
}

impl Simulator {
    /// Checks the parameters and builds the tables and the scan conversion.
    pub fn new(params: SimulationParams) -> Result<Self, SimulateError> {
        let p = &params;
        let d = p.depth_mm;
        in_range(
            "depth_mm",
            d,
            d > 0.0 && d <= MAX_DEPTH_MM,
            "0 < depth_mm ≤ 500",
        )?;
        let f = p.frequency_mhz;
        in_range(
            "frequency_mhz",
            f,
            (1.0..=20.0).contains(&f),
            "1 ≤ frequency_mhz ≤ 20",
        )?;
        let g = p.gain_db;
        in_range(
            "gain_db",
            g,
            (-60.0..=60.0).contains(&g),
            "-60 ≤ gain_db ≤ 60",
        )?;
        let r = p.dynamic_range_db;
        in_range(
            "dynamic_range_db",
            r,
            (10.0..=120.0).contains(&r),
            "10 ≤ dynamic_range_db ≤ 120",
        )?;
        for (name, n) in [("width_px", p.width_px), ("height_px", p.height_px)] {
            in_range(name, n as f64, (1..=8192).contains(&n), "1…8192 pixels")?;
        }
        if p.width_px * p.height_px > MAX_PIXELS {
            return Err(PlaneError::TooManyPixels {
                width_px: p.width_px,
                height_px: p.height_px,
            }
            .into());
        }
        let (scan, half_width_mm, top_v_mm) = match p.probe {
            Probe::Linear { width_mm } => {
                in_range(
                    "width_mm",
                    width_mm,
                    width_mm > 0.0 && width_mm <= 1000.0,
                    "0 < width_mm ≤ 1000",
                )?;
                let half = width_mm / 2.0;
                (
                    Scan::Linear {
                        half_width_mm: half,
                    },
                    half,
                    0.0,
                )
            }
            Probe::Convex { radius_mm, fov_deg } => {
                in_range(
                    "radius_mm",
                    radius_mm,
                    radius_mm > 0.0 && radius_mm <= 1000.0,
                    "0 < radius_mm ≤ 1000",
                )?;
                in_range(
                    "fov_deg",
                    fov_deg,
                    fov_deg > 0.0 && fov_deg < 180.0,
                    "0 < fov_deg < 180",
                )?;
                let half = fov_deg.to_radians() / 2.0;
                let scan = Scan::Convex {
                    radius_mm,
                    half_fov_rad: half,
                };
                (
                    scan,
                    (radius_mm + d) * half.sin(),
                    radius_mm * half.cos() - radius_mm,
                )
            }
        };
        let height_mm = d - top_v_mm;
        let pixel_mm =
            (2.0 * half_width_mm / p.width_px as f64).max(height_mm / p.height_px as f64);
        let widest_mm = match scan {
            Scan::Linear { half_width_mm } => 2.0 * half_width_mm,
            Scan::Convex {
                radius_mm,
                half_fov_rad,
            } => 2.0 * half_fov_rad * (radius_mm + d),
        };
        let lines = match p.line_count {
            Some(n) => {
                in_range(
                    "line_count",
                    n as f64,
                    (2..=MAX_LINES).contains(&n),
                    "2…8192 lines",
                )?;
                n
            }
            None => {
                let spacing_mm = pixel_mm.max(2.0 * SOFT_TISSUE_SPEED_MM_US / f);
                ((widest_mm / spacing_mm).ceil() as usize).clamp(2, MAX_LINES)
            }
        };
        let samples = ((d / pixel_mm).ceil() as usize).clamp(2, MAX_LINES);
        let step_mm = d / samples as f64;
        let wavelength_mm = SOFT_TISSUE_SPEED_MM_US / f;
        let speckle_samples =
            ((wavelength_mm / step_mm).round() as usize).clamp(1, MAX_SPECKLE_SAMPLES);
        // |sum of L unit complex Gaussians| is Rayleigh with σ = √L, mean √L·√(π/2).
        let speckle_norm =
            (1.0 / ((speckle_samples as f64).sqrt() * (std::f64::consts::PI / 2.0).sqrt())) as f32;

        let tissue = (0..LUT_LEN)
            .map(|k| {
                let hu = (k as i32 + LUT_MIN_HU) as f32;
                let (c, rho, alpha, echo) = tissue_properties(hu);
                Tissue {
                    impedance: (rho * c / 1000.0) as f32,
                    loss_db: (2.0 * alpha * f * step_mm / 10.0) as f32,
                    scatter: SCATTER_AMPLITUDE * echo as f32,
                }
            })
            .collect();
        // Rayleigh quantiles (σ = 1): x = √(−2 ln(1 − q)); with a uniform phase, a complex
        // Gaussian of unit variance per component.
        let n = 1usize << RAYLEIGH_BITS;
        let rayleigh = (0..n)
            .map(|k| {
                let q = (k as f64 + 0.5) / n as f64;
                (-2.0 * (1.0 - q).ln()).sqrt() as f32
            })
            .collect();
        let phase = (0..n)
            .map(|k| {
                let (s, c) = (std::f64::consts::TAU * k as f64 / n as f64).sin_cos();
                [c as f32, s as f32]
            })
            .collect();
        let gain_db = (0..samples)
            .map(|k| {
                let depth_cm = (k as f64 + 0.5) * step_mm / 10.0;
                let tgc = if p.tgc {
                    (2.0 * SOFT_TISSUE_ATTENUATION_DB_CM_MHZ * f * depth_cm).min(MAX_TGC_DB)
                } else {
                    0.0
                };
                (tgc + g) as f32
            })
            .collect();
        let left_u_mm = -(p.width_px as f64 - 1.0) / 2.0 * pixel_mm;
        let top_v_mm = top_v_mm + 0.5 * pixel_mm;
        let mut sim = Self {
            params,
            scan,
            lines,
            samples,
            step_mm,
            pixel_mm,
            top_v_mm,
            left_u_mm,
            tissue,
            rayleigh,
            phase,
            speckle_samples,
            speckle_norm,
            gain_db,
            map: Vec::new(),
        };
        sim.map = sim.scan_conversion();
        Ok(sim)
    }

    pub fn params(&self) -> &SimulationParams {
        &self.params
    }
    /// Number of scan lines (beams).
    pub fn line_count(&self) -> usize {
        self.lines
    }
    /// Samples per scan line.
    pub fn samples_per_line(&self) -> usize {
        self.samples
    }
    /// Output pixel size (mm, square).
    pub fn pixel_mm(&self) -> f64 {
        self.pixel_mm
    }

    /// `(u, v)` (mm, probe frame) of pixel `(i, j)`'s centre.
    pub fn pixel_to_probe_mm(&self, i: usize, j: usize) -> [f64; 2] {
        [
            self.left_u_mm + i as f64 * self.pixel_mm,
            self.top_v_mm + j as f64 * self.pixel_mm,
        ]
    }

    /// Continuous (line, sample) coordinates of a probe-frame point, `None` outside the
    /// scan. Line `b`'s centre is at `b`, sample `k` at depth `(k + ½)·step`.
    fn beam_coordinates(&self, u: f64, v: f64) -> Option<(f64, f64)> {
        let (fraction, depth) = match self.scan {
            Scan::Linear { half_width_mm } => {
                if u.abs() > half_width_mm {
                    return None;
                }
                ((u + half_width_mm) / (2.0 * half_width_mm), v)
            }
            Scan::Convex {
                radius_mm,
                half_fov_rad,
            } => {
                let (x, y) = (u, v + radius_mm);
                let theta = x.atan2(y);
                if theta.abs() > half_fov_rad {
                    return None;
                }
                (
                    (theta + half_fov_rad) / (2.0 * half_fov_rad),
                    x.hypot(y) - radius_mm,
                )
            }
        };
        if !(0.0..=self.params.depth_mm).contains(&depth) {
            return None;
        }
        Some((
            fraction * self.lines as f64 - 0.5,
            depth / self.step_mm - 0.5,
        ))
    }

    fn scan_conversion(&self) -> Vec<(u32, f32, f32)> {
        let (w, h) = (self.params.width_px, self.params.height_px);
        let stride = self.samples + 1;
        let mut map = vec![(u32::MAX, 0.0, 0.0); w * h];
        map.par_chunks_mut(w).enumerate().for_each(|(j, row)| {
            for (i, entry) in row.iter_mut().enumerate() {
                let [u, v] = self.pixel_to_probe_mm(i, j);
                if let Some((b, k)) = self.beam_coordinates(u, v) {
                    let b = b.clamp(0.0, (self.lines - 1) as f64);
                    let k = k.clamp(0.0, (self.samples - 1) as f64);
                    let (b0, k0) = (b.floor(), k.floor());
                    let offset = b0 as usize * stride + k0 as usize;
                    *entry = (offset as u32, (b - b0) as f32, (k - k0) as f32);
                }
            }
        });
        map
    }

    /// The image plane of a pose (checked), and the unit beam and lateral axes.
    fn frame(&self, pose: &ProbePose) -> Result<(ImagePlane, Vec3, Vec3), SimulateError> {
        for (name, v) in [
            ("centre_lps", pose.centre_lps),
            ("beam_lps", pose.beam_lps),
            ("lateral_lps", pose.lateral_lps),
        ] {
            for x in v {
                finite(name, x)?;
            }
        }
        let unit = |name, v: Vec3| {
            let n = norm(v);
            if n > 0.0 && n.is_finite() {
                Ok(v.map(|x| x / n))
            } else {
                Err(SimulateError::ZeroVector { name, value: v })
            }
        };
        let beam = unit("beam_lps", pose.beam_lps)?;
        let lateral = unit("lateral_lps", pose.lateral_lps)?;
        let along = dot(lateral, beam);
        let rest: Vec3 = std::array::from_fn(|a| lateral[a] - along * beam[a]);
        if norm(cross(beam, lateral)) < 1e-3 {
            return Err(SimulateError::ParallelAxes {
                beam: pose.beam_lps,
                lateral: pose.lateral_lps,
            });
        }
        let lateral = unit("lateral_lps", rest)?;
        let s = self.pixel_mm;
        let c = pose.centre_lps;
        let origin =
            std::array::from_fn(|a| c[a] + self.left_u_mm * lateral[a] + self.top_v_mm * beam[a]);
        let plane = ImagePlane::from_steps(
            origin,
            lateral.map(|x| x * s),
            beam.map(|x| x * s),
            self.params.width_px,
            self.params.height_px,
        )?;
        Ok((plane, beam, lateral))
    }

    /// The image plane a pose gives (what [`Simulator::simulate`] returns with the pixels).
    pub fn plane(&self, pose: &ProbePose) -> Result<ImagePlane, SimulateError> {
        Ok(self.frame(pose)?.0)
    }

    /// Simulates one frame of `ct` (HU) for `pose`.
    pub fn simulate(
        &self,
        ct: &Volume<f32>,
        pose: &ProbePose,
    ) -> Result<SimulatedFrame, SimulateError> {
        let (plane, beam, lateral) = self.frame(pose)?;
        let sampler = Sampler::new(ct.grid())?;
        let data = ct.data();
        let stride = self.samples + 1;
        // Beam-space grey levels, one line of `samples + 1` per beam (the last repeats the
        // one before) and one extra line repeating the last: bilinear reads never branch.
        let mut lines = vec![0.0f32; (self.lines + 1) * stride];
        let (last, rest) = lines.split_at_mut(self.lines * stride);
        last.par_chunks_mut(stride)
            .enumerate()
            .for_each(|(b, line)| {
                let (start, step) = self.beam_ray(b, pose.centre_lps, beam, lateral);
                let start = sampler.to_index(start);
                let step = mat3_mul_vec(&sampler.world_to_index, step);
                self.trace(b, &sampler, data, start, step, line);
            });
        rest.copy_from_slice(&last[(self.lines - 1) * stride..]);

        let mut pixels = vec![0u8; plane.pixel_count()];
        let width = plane.width_px();
        pixels
            .par_chunks_mut(width)
            .zip(self.map.par_chunks(width))
            .for_each(|(row, map)| {
                for (p, &(o, fb, fk)) in row.iter_mut().zip(map) {
                    if o == u32::MAX {
                        continue;
                    }
                    let o = o as usize;
                    let lerp = |a: f32, b: f32, t: f32| a + (b - a) * t;
                    let near = lerp(lines[o], lines[o + 1], fk);
                    let far = lerp(lines[o + stride], lines[o + stride + 1], fk);
                    *p = (lerp(near, far, fb) + 0.5) as u8;
                }
            });
        Ok(SimulatedFrame { pixels, plane })
    }

    /// LPS position of beam `b`'s sample 0 and the LPS step between samples.
    fn beam_ray(&self, b: usize, centre: Vec3, beam: Vec3, lateral: Vec3) -> (Vec3, Vec3) {
        let fraction = (b as f64 + 0.5) / self.lines as f64;
        let (face, direction) = match self.scan {
            Scan::Linear { half_width_mm } => {
                let u = -half_width_mm + 2.0 * half_width_mm * fraction;
                ([u, 0.0], [0.0, 1.0])
            }
            Scan::Convex {
                radius_mm,
                half_fov_rad,
            } => {
                let theta = -half_fov_rad + 2.0 * half_fov_rad * fraction;
                let (s, c) = theta.sin_cos();
                ([radius_mm * s, radius_mm * c - radius_mm], [s, c])
            }
        };
        let h = 0.5 * self.step_mm;
        let start = std::array::from_fn(|a| {
            centre[a]
                + (face[0] + h * direction[0]) * lateral[a]
                + (face[1] + h * direction[1]) * beam[a]
        });
        let step = std::array::from_fn(|a| {
            self.step_mm * (direction[0] * lateral[a] + direction[1] * beam[a])
        });
        (start, step)
    }

    /// One beam: CT samples → echo grey levels (0…255, before rounding) into `line`.
    fn trace(
        &self,
        b: usize,
        sampler: &Sampler,
        data: &[f32],
        start: Vec3,
        step: Vec3,
        line: &mut [f32],
    ) {
        let mut rng = XorShift::new(self.params.seed, b as u64);
        let scale = 255.0 / self.params.dynamic_range_db as f32;
        let range = self.params.dynamic_range_db as f32;
        let mut loss_db = 0.0f32;
        let mut previous: Option<f32> = None;
        let shift = 64 - RAYLEIGH_BITS;
        let mask = (1u64 << RAYLEIGH_BITS) - 1;
        // Speckle: a moving sum of complex Gaussians over one wavelength along the beam
        // (the pulse's length), whose magnitude is Rayleigh-distributed and correlated.
        let mut window = [[0.0f32; 2]; MAX_SPECKLE_SAMPLES];
        let mut phasor = [0.0f32; 2];
        let length = self.speckle_samples;
        let draw = |rng: &mut XorShift| {
            let bits = rng.next();
            let r = self.rayleigh[(bits >> shift) as usize];
            let [c, s] = self.phase[(bits & mask) as usize];
            [r * c, r * s]
        };
        for slot in window.iter_mut().take(length - 1) {
            *slot = draw(&mut rng);
            phasor[0] += slot[0];
            phasor[1] += slot[1];
        }
        for k in 0..self.samples {
            let t = k as f64;
            let c = std::array::from_fn(|a| start[a] + t * step[a]);
            let hu = sampler.trilinear(data, c);
            let index = ((hu.round() as i32 - LUT_MIN_HU).clamp(0, LUT_LEN as i32 - 1)) as usize;
            let tissue = self.tissue[index];
            let z = tissue.impedance;
            let z0 = previous.unwrap_or(z);
            previous = Some(z);
            let sum = z + z0;
            let r = ((z - z0) / sum) * ((z - z0) / sum);
            let transmitted = 4.0 * z * z0 / (sum * sum);
            let slot = (k + length - 1) % length;
            let fresh = draw(&mut rng);
            phasor[0] += fresh[0];
            phasor[1] += fresh[1];
            let speckle = phasor[0].hypot(phasor[1]) * self.speckle_norm;
            // Drop the oldest of the `length` terms (`fresh` itself when length = 1).
            window[slot] = fresh;
            let oldest = (slot + 1) % length;
            phasor[0] -= window[oldest][0];
            phasor[1] -= window[oldest][1];
            let amplitude = r.sqrt() + tissue.scatter * speckle;
            let grey = if amplitude > 0.0 {
                let db = 20.0 * amplitude.log10() - loss_db + self.gain_db[k];
                ((db + range) * scale).clamp(0.0, 255.0)
            } else {
                0.0
            };
            line[k] = grey;
            loss_db += tissue.loss_db;
            if transmitted < 1.0 {
                loss_db -= 10.0 * transmitted.max(1e-30).log10();
            }
        }
        line[self.samples] = line[self.samples - 1];
    }
}

/// Checks the parameters and simulates one frame (see [`Simulator`] to reuse the tables).
pub fn simulate(
    ct: &Volume<f32>,
    params: &SimulationParams,
    pose: &ProbePose,
) -> Result<SimulatedFrame, SimulateError> {
    Simulator::new(*params)?.simulate(ct, pose)
}

/// CT sampling at continuous voxel indices, the reslice's trilinear ([`crate::reslice`](mod@crate::reslice),
/// ITK's inside test and edge clamping); outside is air (−1000 HU).
struct Sampler {
    world_to_index: [[f64; 3]; 3],
    origin: Vec3,
    cells: Cells,
}

impl Sampler {
    fn new(grid: &Grid) -> Result<Self, SimulateError> {
        let m = grid.ijk_to_lps();
        let index_to_world = std::array::from_fn(|r| [m[r][0], m[r][1], m[r][2]]);
        let world_to_index = mat3_inverse(&index_to_world).ok_or(SimulateError::SingularGrid)?;
        Ok(Self {
            world_to_index,
            origin: grid.origin_lps(),
            cells: Cells::new(grid),
        })
    }

    fn to_index(&self, lps: Vec3) -> Vec3 {
        let o = self.origin;
        mat3_mul_vec(
            &self.world_to_index,
            [lps[0] - o[0], lps[1] - o[1], lps[2] - o[2]],
        )
    }

    #[inline(always)]
    fn trilinear(&self, data: &[f32], c: Vec3) -> f32 {
        // A `match`, not `map_or` (see `reslice_labels_into`).
        match self.cells.locate(c) {
            Some(v) => self.cells.trilinear(data, &v),
            None => -1000.0,
        }
    }
}

/// xorshift64*: a small, fast, seeded generator (speckle only; not cryptographic).
struct XorShift(u64);

impl XorShift {
    /// One independent stream per (seed, beam), through splitmix64.
    fn new(seed: u64, stream: u64) -> Self {
        let mut z = seed ^ stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(z.max(1))
    }

    #[inline(always)]
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impedances_and_reflections_match_the_acoustic_facts() {
        let z = |hu: f32| {
            let (c, rho, _, _) = tissue_properties(hu);
            rho * c / 1000.0
        };
        // Soft tissue ~1.6 MRayl, bone ~6–8, air ~0.0004.
        assert!((z(40.0) - 1.6).abs() < 0.05);
        assert!((5.0..8.0).contains(&z(1000.0)));
        assert!(z(-1000.0) < 0.001);
        let r = |a: f64, b: f64| ((b - a) / (b + a)).powi(2);
        assert!(r(z(40.0), z(-1000.0)) > 0.998);
    }

    #[test]
    fn rayleigh_table_has_the_rayleigh_mean() {
        let sim = Simulator::new(SimulationParams::default()).unwrap();
        let mean = sim.rayleigh.iter().map(|&x| f64::from(x)).sum::<f64>() / 1024.0;
        let expected = (std::f64::consts::PI / 2.0).sqrt();
        assert!((mean - expected).abs() < 0.01, "{mean}");
    }
}
