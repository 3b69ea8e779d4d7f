//! Simulated ground truth: X-rays of the CT at known poses with another HU→μ model than
//! the registration's, Poisson noise, and the target registration error.

use pinhole_volume::{label_stats, Vec3, Volume};
use pinhole_xray::{Image, Integrator, Projection};
use rayon::prelude::*;

use crate::cmaes::Rng;
use crate::pose::Pose;

/// The HU→μ model of the simulated X-rays: water-like up to `bone_threshold_hu`, then a
/// steeper bone slope (unlike the registration's bilinear model with its knee at 0 HU).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XrayModel {
    pub mu_water_per_mm: f64,
    pub bone_threshold_hu: f64,
    /// μ at 1000 HU above the threshold's line (1/mm).
    pub mu_bone_per_mm: f64,
    /// Expected photons per pixel without attenuation (`0`: no noise, no exponential;
    /// the line integral is returned).
    pub photons_per_pixel: f64,
}

impl Default for XrayModel {
    fn default() -> Self {
        Self {
            mu_water_per_mm: 0.0206,
            bone_threshold_hu: 150.0,
            mu_bone_per_mm: 0.0490,
            photons_per_pixel: 20_000.0,
        }
    }
}

impl XrayModel {
    pub fn mu_per_mm(&self, hu: f64) -> f64 {
        let hu = hu.max(-1000.0);
        let t = self.bone_threshold_hu;
        let w = self.mu_water_per_mm;
        if hu <= t {
            (w * (1.0 + hu / 1000.0)).max(0.0)
        } else {
            let at_t = w * (1.0 + t / 1000.0);
            let slope = (self.mu_bone_per_mm - w * (1.0 + t / 1000.0)) / (1000.0 - t);
            at_t + (hu - t) * slope.max(0.0)
        }
    }

    pub fn mu_volume(&self, ct_hu: &Volume<f32>) -> Volume<f32> {
        ct_hu.map(|v| self.mu_per_mm(f64::from(v)) as f32)
    }
}

/// A raw detector image `Poisson(N₀·exp(−∫μ))` of the CT moved by `truth`, rendered with
/// fine trilinear steps (`step_mm`) from `mu` (built with [`XrayModel::mu_volume`]).
pub fn simulate_xray(
    mu: &Volume<f32>,
    nominal: &Projection,
    truth: &Pose,
    model: &XrayModel,
    step_mm: f64,
    seed: u64,
) -> Result<Image, crate::RegisterError> {
    let projection = truth.projection(nominal)?;
    let mut image = pinhole_xray::render(mu, &projection, Integrator::TrilinearStep { step_mm });
    if model.photons_per_pixel > 0.0 {
        let n0 = model.photons_per_pixel;
        image
            .data
            .par_chunks_mut(image.width.max(1))
            .enumerate()
            .for_each(|(row, line)| {
                let mut rng = Rng::new(seed ^ (row as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                for v in line.iter_mut() {
                    *v = rng.poisson(n0 * (-f64::from(*v)).exp()) as f32;
                }
            });
    }
    Ok(image)
}

/// A pose with each rotation uniform in ±`rotation_deg` and each translation uniform in
/// ±`translation_mm`.
pub fn random_pose(
    rng: &mut Rng,
    center_lps: Vec3,
    rotation_deg: f64,
    translation_mm: f64,
) -> Pose {
    let mut p = [0.0; 6];
    for (i, v) in p.iter_mut().enumerate() {
        let r = if i < 3 { rotation_deg } else { translation_mm };
        *v = (2.0 * rng.uniform() - 1.0) * r;
    }
    Pose::from_params(&p, center_lps)
}

/// Centroids (LPS mm) of the labels present, at least `min_voxels` voxels each.
pub fn label_centroids(labels: &Volume<u16>, min_voxels: usize) -> Vec<(u32, Vec3)> {
    label_stats(labels)
        .into_values()
        .filter(|s| s.voxels >= min_voxels)
        .map(|s| (s.id, s.centroid_lps))
        .collect()
}

/// Mean target registration error (mm): mean over `points` of |estimate(p) − truth(p)|.
pub fn mtre(estimate: &Pose, truth: &Pose, points: &[Vec3]) -> f64 {
    if points.is_empty() {
        return 0.0;
    }
    points
        .iter()
        .map(|&p| {
            let (a, b) = (estimate.apply(p), truth.apply(p));
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
        })
        .sum::<f64>()
        / points.len() as f64
}

/// Mean reprojection distance (mm at the detector) of `points` between two poses.
pub fn mean_projection_distance_mm(
    estimate: &Pose,
    truth: &Pose,
    nominal: &Projection,
    points: &[Vec3],
) -> Option<f64> {
    let pitch = pinhole_volume::math::norm(nominal.col_step);
    let mut sum = 0.0;
    for &p in points {
        let a = nominal.project(estimate.apply(p))?;
        let b = nominal.project(truth.apply(p))?;
        sum += ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt() * pitch;
    }
    Some(sum / points.len().max(1) as f64)
}
