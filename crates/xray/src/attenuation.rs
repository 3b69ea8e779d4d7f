//! HU → linear attenuation μ (1/mm): a bilinear water/bone model.
//!
//! μ = μ_water · (1 + HU/1000) for HU ≤ 0 (air → 0, water → μ_water), and
//! μ = μ_water + HU · (μ_bone − μ_water) / HU_bone above 0 (HU_bone → μ_bone), with HU
//! clamped below at −1000. The defaults are nanodrr's (μ_water 0.0192 /mm, μ_bone
//! 0.0573 /mm, HU_bone 1000), so our line integrals compare with its output.

use pinhole_volume::{Volume, Voxel};

/// Parameters of the bilinear HU → μ model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attenuation {
    pub mu_water_per_mm: f64,
    pub mu_bone_per_mm: f64,
    pub hu_bone: f64,
    pub hu_min: f64,
}

impl Default for Attenuation {
    fn default() -> Self {
        Self {
            mu_water_per_mm: 0.0192,
            mu_bone_per_mm: 0.0573,
            hu_bone: 1000.0,
            hu_min: -1000.0,
        }
    }
}

impl Attenuation {
    /// μ in 1/mm for a Hounsfield value.
    #[inline]
    pub fn mu_per_mm(&self, hu: f64) -> f64 {
        let hu = hu.max(self.hu_min);
        if hu <= 0.0 {
            (self.mu_water_per_mm * (1.0 + hu / 1000.0)).max(0.0)
        } else {
            self.mu_water_per_mm + hu * (self.mu_bone_per_mm - self.mu_water_per_mm) / self.hu_bone
        }
    }

    /// A μ volume (1/mm, f32) from a CT in HU.
    pub fn mu_volume<T: Voxel>(&self, ct_hu: &Volume<T>) -> Volume<f32> {
        ct_hu.map(|v| self.mu_per_mm(v.to_f64()) as f32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_of_the_bilinear_model() {
        let a = Attenuation::default();
        assert_eq!(a.mu_per_mm(-1000.0), 0.0);
        assert_eq!(a.mu_per_mm(-3000.0), 0.0);
        assert!((a.mu_per_mm(0.0) - 0.0192).abs() < 1e-12);
        assert!((a.mu_per_mm(1000.0) - 0.0573).abs() < 1e-12);
        assert!((a.mu_per_mm(-500.0) - 0.0096).abs() < 1e-12);
    }
}
