//! Coarse copies of a scene for interactive DRRs: a block-averaged attenuation volume and
//! per-organ occupancy volumes cropped to each organ, so that a C-arm slider move renders
//! in tens of milliseconds on two cores (the viewer's fluoroscopy panel), plus the
//! half-resolution projection and the upsampling that go with them.
//!
//! Block averages conserve mass: a coarse voxel holds the sum over its block divided by
//! the full block size, blocks cut by the volume's far edge counting the missing voxels as
//! air. A line integral through the coarse volume therefore estimates the one through the
//! original (exactly for rays along an axis through whole blocks), and the integral of an
//! occupancy volume is the path length through the organ in mm.

use pinhole_volume::{Grid, Volume};
use rayon::prelude::*;

use crate::geometry::Projection;
use crate::render::Image;

/// Block size per axis that brings each voxel side up to about `target_mm` (1 where the
/// voxel already is that large).
pub fn block_for_spacing(spacing_mm: [f64; 3], target_mm: f64) -> [usize; 3] {
    spacing_mm.map(|s| ((target_mm / s).round() as usize).max(1))
}

/// `volume` averaged over `block`-sized blocks (mass-conserving, see the module docs).
pub fn block_mean(volume: &Volume<f32>, block: [usize; 3]) -> Volume<f32> {
    let dims = volume.grid().dims();
    block_average(volume.grid(), [0; 3], dims, block, |offset| {
        volume.data()[offset]
    })
}

/// [`block_mean`] over the bounding box of the voxels above `threshold` (the body and
/// table of a CT's attenuation, without the air around them, which rays then skip);
/// `None` when no voxel is above it. What lies outside the box (values ≤ `threshold`)
/// is left out of every line integral.
pub fn block_mean_of_content(
    volume: &Volume<f32>,
    threshold: f32,
    block: [usize; 3],
) -> Option<Volume<f32>> {
    let (low, high) = volume.bounding_box_where(|v| v > threshold)?;
    let extent: [usize; 3] = std::array::from_fn(|a| high[a] + 1 - low[a]);
    Some(block_average(volume.grid(), low, extent, block, |offset| {
        volume.data()[offset]
    }))
}

/// The fraction of each `block` occupied by `label`, over the label's bounding box (one
/// block of margin); `None` when no voxel has the label.
pub fn label_occupancy(labels: &Volume<u16>, label: u16, block: [usize; 3]) -> Option<Volume<f32>> {
    let grid = labels.grid();
    let (low, high) = labels.bounding_box_where(|v| v == label)?;
    let start: [usize; 3] =
        std::array::from_fn(|a| (low[a] / block[a]).saturating_sub(1) * block[a]);
    let end: [usize; 3] = std::array::from_fn(|a| (high[a] + 1 + block[a]).min(grid.dims()[a]));
    let extent: [usize; 3] = std::array::from_fn(|a| end[a] - start[a]);
    let data = labels.data();
    Some(block_average(grid, start, extent, block, |offset| {
        f32::from(u8::from(data[offset] == label))
    }))
}

/// Averages `value(offset)` over blocks of the region `start .. start + extent` of `grid`.
fn block_average(
    grid: &Grid,
    start: [usize; 3],
    extent: [usize; 3],
    block: [usize; 3],
    value: impl Fn(usize) -> f32,
) -> Volume<f32> {
    let block = block.map(|b| b.max(1));
    let coarse_dims: [usize; 3] = std::array::from_fn(|a| extent[a].div_ceil(block[a]).max(1));
    let mut sums = vec![0.0f32; coarse_dims.iter().product()];
    for k in 0..extent[2] {
        for j in 0..extent[1] {
            let row = (k / block[2]) * coarse_dims[1] + j / block[1];
            for i in 0..extent[0] {
                let offset = grid.offset([start[0] + i, start[1] + j, start[2] + k]);
                sums[row * coarse_dims[0] + i / block[0]] += value(offset);
            }
        }
    }
    let block_voxels = block.iter().product::<usize>() as f32;
    for s in &mut sums {
        *s /= block_voxels;
    }
    let centre_of_first: [f64; 3] =
        std::array::from_fn(|a| start[a] as f64 + (block[a] as f64 - 1.0) / 2.0);
    let spacing: [f64; 3] = std::array::from_fn(|a| grid.spacing_mm()[a] * block[a] as f64);
    let coarse = Grid::new(
        coarse_dims,
        spacing,
        grid.index_to_world(centre_of_first),
        grid.direction(),
    )
    .expect("a block grid of a valid grid is valid");
    Volume::new(coarse, sums).expect("one value per coarse voxel")
}

/// The same detector with pixels `factor` times larger (width and height divided,
/// rounded up), each coarse pixel centred on its block of fine pixels.
pub fn coarse_projection(projection: &Projection, factor: usize) -> Projection {
    let f = factor.max(1) as f64;
    let half = (f - 1.0) / 2.0;
    Projection {
        source_lps: projection.source_lps,
        pixel00_lps: projection.pixel_lps(half, half),
        col_step: projection.col_step.map(|v| v * f),
        row_step: projection.row_step.map(|v| v * f),
        width: projection.width.div_ceil(factor.max(1)),
        height: projection.height.div_ceil(factor.max(1)),
    }
}

/// `coarse` (made with [`coarse_projection`] and `factor`) bilinearly upsampled to
/// `width` × `height`, edges clamped.
pub fn upsample(coarse: &Image, factor: usize, width: usize, height: usize) -> Image {
    let columns = taps(width, coarse.width, factor);
    let rows = taps(height, coarse.height, factor);
    let mut data = vec![0.0f32; width * height];
    data.par_chunks_mut(width.max(1))
        .zip(&rows)
        .for_each(|(line, &(r0, r1, fr))| {
            let top = &coarse.data[r0 * coarse.width..(r0 + 1) * coarse.width];
            let bottom = &coarse.data[r1 * coarse.width..(r1 + 1) * coarse.width];
            for (out, &(c0, c1, fc)) in line.iter_mut().zip(&columns) {
                let upper = top[c0] + (top[c1] - top[c0]) * fc;
                let lower = bottom[c0] + (bottom[c1] - bottom[c0]) * fc;
                *out = upper + (lower - upper) * fr;
            }
        });
    Image {
        width,
        height,
        data,
    }
}

/// For each of `fine` pixels along an axis, the two of `n` coarse pixels (made with
/// `factor`, see [`coarse_projection`]) around it and the weight of the second: bilinear
/// upsampling taps, edges clamped.
pub(crate) fn taps(fine: usize, n: usize, factor: usize) -> Vec<(usize, usize, f32)> {
    let f = factor.max(1) as f32;
    let half = (f - 1.0) / 2.0;
    let last = n.saturating_sub(1);
    (0..fine)
        .map(|x| {
            let u = ((x as f32 - half) / f).clamp(0.0, last as f32);
            let low = u.floor() as usize;
            (low, (low + 1).min(last), u - low as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{CArm, Detector};
    use crate::render::{render, Integrator};

    fn grid() -> Grid {
        Grid::new(
            [9, 7, 5],
            [0.5, 0.7, 2.0],
            [3.0, -20.0, 40.0],
            [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
        )
        .unwrap()
    }

    /// Block averaging conserves the total and puts each coarse voxel's centre at the
    /// centre of its block (an asymmetric, rotated grid with blocks cut by the edge).
    #[test]
    fn block_mean_conserves_mass_and_centres_blocks() {
        let grid = grid();
        let data: Vec<f32> = (0..grid.voxel_count()).map(|n| (n % 13) as f32).collect();
        let volume = Volume::new(grid.clone(), data.clone()).unwrap();
        let coarse = block_mean(&volume, [2, 3, 1]);
        assert_eq!(coarse.grid().dims(), [5, 3, 5]);
        let total: f32 = data.iter().sum();
        let coarse_total: f32 = coarse.data().iter().sum::<f32>() * 6.0;
        assert!(
            (total - coarse_total).abs() < 1e-3,
            "{total} vs {coarse_total}"
        );
        // Coarse voxel (1, 1, 2) covers fine i 2..=3, j 3..=5, k 2: centre (2.5, 4, 2).
        let expected = grid.index_to_world([2.5, 4.0, 2.0]);
        let got = coarse.grid().index_to_world([1.0, 1.0, 2.0]);
        for a in 0..3 {
            assert!(
                (expected[a] - got[a]).abs() < 1e-9,
                "{expected:?} vs {got:?}"
            );
        }
        let mean = (2..=3)
            .flat_map(|i| (3..=5).map(move |j| (i, j)))
            .map(|(i, j)| data[grid.offset([i, j, 2])])
            .sum::<f32>()
            / 6.0;
        assert_eq!(coarse.get([1, 1, 2]), Some(mean));
    }

    /// Cropping to the content keeps every line integral through it.
    #[test]
    fn cropping_to_content_keeps_line_integrals() {
        let grid =
            Grid::axis_aligned([30, 30, 10], [1.0, 1.0, 2.0], [-15.0, -15.0, -10.0]).unwrap();
        let mut mu = Volume::filled(grid.clone(), 0.0f32);
        for k in 2..8 {
            for j in 5..25 {
                for i in 12..20 {
                    mu.data_mut()[grid.offset([i, j, k])] = 0.02 + 0.001 * (i + j) as f32;
                }
            }
        }
        let cropped = block_mean_of_content(&mu, 0.0, [1, 1, 1]).unwrap();
        assert_eq!(cropped.grid().dims(), [8, 20, 6]);
        assert!(
            block_mean_of_content(&Volume::filled(grid.clone(), 0.0f32), 0.0, [2, 2, 1]).is_none()
        );
        let mut carm = CArm::new(grid.center_lps());
        carm.lao_deg = 20.0;
        carm.detector = Detector {
            width: 24,
            height: 24,
            pixel_mm: 1.5,
        };
        let projection = carm.projection().unwrap();
        let full = render(&mu, &projection, Integrator::Siddon);
        let crop = render(&cropped, &projection, Integrator::Siddon);
        for (a, b) in full.data.iter().zip(&crop.data) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// The occupancy of a box-shaped label integrates to the box's length along a ray,
    /// as the exact per-label path length does.
    #[test]
    fn occupancy_integrates_to_the_path_length() {
        let grid =
            Grid::axis_aligned([40, 30, 20], [1.0, 1.0, 2.0], [-20.0, -15.0, -20.0]).unwrap();
        let mut labels = Volume::filled(grid.clone(), 0u16);
        for k in 5..12 {
            for j in 8..20 {
                for i in 10..26 {
                    labels.data_mut()[grid.offset([i, j, k])] = 7;
                }
            }
        }
        assert!(label_occupancy(&labels, 3, [2, 2, 1]).is_none());
        let occupancy = label_occupancy(&labels, 7, [2, 2, 1]).unwrap();
        assert!(occupancy.grid().dims()[0] < 20, "cropped to the label");
        let mut carm = CArm::new(grid.center_lps());
        carm.detector = Detector {
            width: 32,
            height: 32,
            pixel_mm: 1.5,
        };
        let projection = carm.projection().unwrap();
        let exact = &crate::project_labels(&labels, &[7], &projection)[0];
        let coarse = render(&occupancy, &projection, Integrator::Siddon);
        let centre = 16 * 32 + 16;
        // Anterior-posterior through 12 voxels of 1 mm: 12 mm (less the cone's tilt).
        assert!(
            (exact.data[centre] - 12.0).abs() < 0.2,
            "{}",
            exact.data[centre]
        );
        assert!((coarse.data[centre] - exact.data[centre]).abs() < 0.3);
        let sum = |img: &Image| img.data.iter().sum::<f32>();
        assert!((sum(&coarse) / sum(exact) - 1.0).abs() < 0.05);
    }

    /// A coarse projection's pixel centres sit at the centres of the fine pixel blocks,
    /// and upsampling a linear ramp gives the ramp back.
    #[test]
    fn coarse_projection_and_upsampling_line_up() {
        let mut carm = CArm::new([1.0, 2.0, 3.0]);
        carm.lao_deg = 25.0;
        carm.detector = Detector {
            width: 64,
            height: 48,
            pixel_mm: 1.0,
        };
        let fine = carm.projection().unwrap();
        let coarse = coarse_projection(&fine, 2);
        assert_eq!((coarse.width, coarse.height), (32, 24));
        let (a, b) = (coarse.pixel_lps(3.0, 5.0), fine.pixel_lps(6.5, 10.5));
        for axis in 0..3 {
            assert!((a[axis] - b[axis]).abs() < 1e-9);
        }
        let ramp = Image {
            width: 32,
            height: 24,
            data: (0..24)
                .flat_map(|r| (0..32).map(move |c| (2 * c) as f32 + 0.5 + 100.0 * r as f32))
                .collect(),
        };
        let up = upsample(&ramp, 2, 64, 48);
        for (r, c) in [(10, 20), (30, 41), (47, 1)] {
            let expected =
                (c as f32).clamp(0.5, 62.5) + 100.0 * ((r as f32 - 0.5) / 2.0).clamp(0.0, 23.0);
            assert!((up.data[r * 64 + c] - expected).abs() < 1e-3, "{r},{c}");
        }
    }
}
