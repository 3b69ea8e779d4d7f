//! Volumes for the registration levels: μ from HU (optionally only inside a label subset)
//! and block-averaged downsampling (anti-aliased, keeps the LPS geometry).

use pinhole_volume::{Grid, Volume};
use pinhole_xray::Attenuation;
use rayon::prelude::*;

use crate::RegisterError;

/// Integer block factors that bring `spacing_mm` closest to `target_mm` (at least 1).
pub fn factors_for(spacing_mm: [f64; 3], target_mm: f64) -> [usize; 3] {
    spacing_mm.map(|s| ((target_mm / s).round() as usize).max(1))
}

/// Block mean over `factors` voxels per axis (trailing partial blocks dropped). The new
/// voxel centres are the blocks' centres, so the volume stays where it was in LPS.
pub fn downsample_mean(v: &Volume<f32>, factors: [usize; 3]) -> Result<Volume<f32>, RegisterError> {
    let f = factors.map(|x| x.max(1));
    if f == [1, 1, 1] {
        return Ok(v.clone());
    }
    let g = v.grid();
    let n = g.dims();
    let dims: [usize; 3] = std::array::from_fn(|a| (n[a] / f[a]).max(1));
    let f: [usize; 3] = std::array::from_fn(|a| f[a].min(n[a]));
    let spacing: [f64; 3] = std::array::from_fn(|a| g.spacing_mm()[a] * f[a] as f64);
    let origin = g.index_to_world(std::array::from_fn(|a| (f[a] as f64 - 1.0) / 2.0));
    let grid = Grid::new(dims, spacing, origin, g.direction()).map_err(|e| {
        RegisterError::Volume(format!("downsampled grid {dims:?} at {spacing:?} mm: {e}"))
    })?;
    let src = v.data();
    let inv = 1.0 / (f[0] * f[1] * f[2]) as f32;
    let mut data = vec![0.0f32; dims[0] * dims[1] * dims[2]];
    data.par_chunks_mut(dims[0] * dims[1])
        .enumerate()
        .for_each(|(k, slice)| {
            for j in 0..dims[1] {
                for i in 0..dims[0] {
                    let mut s = 0.0f32;
                    for kk in k * f[2]..(k + 1) * f[2] {
                        for jj in j * f[1]..(j + 1) * f[1] {
                            let row = (kk * n[1] + jj) * n[0];
                            s += src[row + i * f[0]..row + (i + 1) * f[0]]
                                .iter()
                                .sum::<f32>();
                        }
                    }
                    slice[j * dims[0] + i] = s * inv;
                }
            }
        });
    Volume::new(grid, data).map_err(|e| RegisterError::Volume(e.to_string()))
}

/// μ (1/mm) from a CT in HU; with `mask`, zero outside the voxels whose label is one of
/// the given ids (the DRR then shows only those structures, e.g. the spine).
pub fn mu_volume(
    ct_hu: &Volume<f32>,
    attenuation: &Attenuation,
    mask: Option<(&Volume<u16>, &[u16])>,
) -> Result<Volume<f32>, RegisterError> {
    let mut mu = attenuation.mu_volume(ct_hu);
    if let Some((labels, ids)) = mask {
        if labels.grid().dims() != ct_hu.grid().dims() {
            return Err(RegisterError::Volume(format!(
                "label map {:?} is not on the CT's grid {:?}",
                labels.grid().dims(),
                ct_hu.grid().dims()
            )));
        }
        mu.data_mut()
            .par_iter_mut()
            .zip(labels.data().par_iter())
            .for_each(|(m, l)| {
                if !ids.contains(l) {
                    *m = 0.0;
                }
            });
    }
    Ok(mu)
}

/// μ volumes for the registration levels: block means of the full-resolution μ at about
/// each of `targets_mm` (coarse first).
pub fn mu_pyramid(
    ct_hu: &Volume<f32>,
    attenuation: &Attenuation,
    mask: Option<(&Volume<u16>, &[u16])>,
    targets_mm: &[f64],
) -> Result<Vec<Volume<f32>>, RegisterError> {
    let mu = mu_volume(ct_hu, attenuation, mask)?;
    targets_mm
        .iter()
        .map(|&t| downsample_mean(&mu, factors_for(mu.grid().spacing_mm(), t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_mean_keeps_the_centre_and_averages() {
        let grid = Grid::axis_aligned([4, 6, 3], [1.0, 2.0, 3.0], [10.0, 20.0, 30.0]).unwrap();
        let data: Vec<f32> = (0..72).map(|i| i as f32).collect();
        let v = Volume::new(grid, data).unwrap();
        let d = downsample_mean(&v, [2, 3, 1]).unwrap();
        assert_eq!(d.grid().dims(), [2, 2, 3]);
        assert_eq!(d.grid().spacing_mm(), [2.0, 6.0, 3.0]);
        assert_eq!(d.grid().origin_lps(), [10.5, 22.0, 30.0]);
        // Block (0,0,0): i 0..2, j 0..3 at k 0 → offsets 0,1,4,5,8,9.
        assert_eq!(d.data()[0], 27.0 / 6.0);
        let c = (v.grid().center_lps(), d.grid().center_lps());
        assert!((0..3).all(|a| (c.0[a] - c.1[a]).abs() < 1e-9));
    }
}
