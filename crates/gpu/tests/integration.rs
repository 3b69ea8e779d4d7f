//! GPU DRR against the CPU trilinear reference (`pinhole_xray::render`), on one shared
//! adapter (Mesa lavapipe in CI).
//!
//! Without any adapter these tests fail, unless `PINHOLE_SKIP_GPU=1` is set.

// Helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only tests).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use pinhole_gpu::{GpuContext, GpuDrr};
use pinhole_volume::{Grid, Volume};
use pinhole_xray::{render, Attenuation, CArm, Detector, Image, Integrator, Projection};

const SAMPLES: usize = 300;
const TOLERANCE: f64 = 1e-3;

/// One adapter and device for the whole binary (as rerun's `context_test.rs`).
static GPU: LazyLock<Option<GpuContext>> = LazyLock::new(|| match GpuContext::new() {
    Ok(ctx) => {
        let ctx = ctx.with_poll_timeout(Duration::from_secs(60));
        eprintln!("GPU adapter: {}", ctx.adapter_info());
        Some(ctx)
    }
    Err(e) if std::env::var("PINHOLE_SKIP_GPU").as_deref() == Ok("1") => {
        eprintln!("PINHOLE_SKIP_GPU=1: skipping GPU tests ({e})");
        None
    }
    Err(e) => panic!(
        "no GPU adapter, so the GPU DRR tests cannot run: {e}\n\
         Install Mesa lavapipe (apt-get install mesa-vulkan-drivers libvulkan1) \
         or set PINHOLE_SKIP_GPU=1 to skip them deliberately."
    ),
});

fn gpu() -> Option<&'static GpuContext> {
    GPU.as_ref()
}

fn shared_data(relative: &str) -> PathBuf {
    let base = std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    base.join(relative)
}

/// 64×48×40, anisotropic spacing, rotated axes, off-centre boxes and spheres of
/// different μ (asymmetric, so a flipped axis would show).
fn synthetic() -> Volume<f32> {
    let (a, b) = (20f64.to_radians(), 10f64.to_radians());
    let rz = [
        [a.cos(), -a.sin(), 0.0],
        [a.sin(), a.cos(), 0.0],
        [0.0, 0.0, 1.0],
    ];
    let rx = [
        [1.0, 0.0, 0.0],
        [0.0, b.cos(), -b.sin()],
        [0.0, b.sin(), b.cos()],
    ];
    let dir: [[f64; 3]; 3] =
        std::array::from_fn(|r| std::array::from_fn(|c| (0..3).map(|k| rz[r][k] * rx[k][c]).sum()));
    let grid = Grid::new([64, 48, 40], [0.9, 1.3, 2.1], [-30.0, 12.0, -40.0], dir).unwrap();
    let mut v = Volume::filled(grid, 0.0f32);
    let [nx, ny, nz] = v.grid().dims();
    for k in 0..nz {
        for j in 0..ny {
            for i in 0..nx {
                let (x, y, z) = (i as f64, j as f64, k as f64);
                let mut mu = 0.0;
                // Soft-tissue slab over most of the volume.
                if (4.0..58.0).contains(&x) && (3.0..44.0).contains(&y) && (2.0..37.0).contains(&z)
                {
                    mu = 0.019;
                }
                // Dense box near one corner.
                if (8.0..22.0).contains(&x) && (6.0..15.0).contains(&y) && (20.0..33.0).contains(&z)
                {
                    mu = 0.057;
                }
                // Sphere of intermediate density.
                let r2 = (x - 44.0).powi(2) + (y - 30.0).powi(2) + ((z - 12.0) * 1.6).powi(2);
                if r2 < 100.0 {
                    mu = 0.035;
                }
                // A thin high-contrast rod (tests sub-voxel accuracy).
                if (x - 30.0).abs() < 1.0 && (y - 20.0).abs() < 1.0 {
                    mu = 0.08;
                }
                let o = v.grid().offset([i, j, k]);
                v.data_mut()[o] = mu;
            }
        }
    }
    v
}

/// A sparse volume: two objects in air, so most 8³ blocks are empty.
fn sparse() -> Volume<f32> {
    let mut v = synthetic();
    let grid = v.grid().clone();
    for (n, mu) in v.data_mut().iter_mut().enumerate() {
        let [i, j, k] = grid.index_of_offset(n);
        let keep = (i < 24 && j < 16 && k >= 18) || (i > 32 && j > 18 && k < 24 && *mu > 0.03);
        if !keep {
            *mu = 0.0;
        }
    }
    v
}

fn abdomen_mu() -> Volume<f32> {
    let path = shared_data("abdomen-ct/example_ct.nii.gz");
    let ct = pinhole_io::nifti::read(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    Attenuation::default().mu_volume(&ct.to_f32())
}

/// LAO/RAO × CRAN/CAUD combinations, source anterior, 128² detector.
fn poses(mu: &Volume<f32>, pixel_mm: f64) -> Vec<(String, Projection)> {
    let mut out = Vec::new();
    for (lao, cran) in [
        (0.0, 0.0),
        (30.0, 0.0),
        (-45.0, 20.0),
        (60.0, -25.0),
        (90.0, 0.0),
        (-20.0, -30.0),
    ] {
        let mut c = CArm::new(mu.grid().center_lps());
        c.lao_deg = lao;
        c.cran_deg = cran;
        c.source_anterior = true;
        c.detector = Detector {
            width: 128,
            height: 128,
            pixel_mm,
        };
        let side = if lao >= 0.0 { "LAO" } else { "RAO" };
        let tilt = if cran >= 0.0 { "CRAN" } else { "CAUD" };
        let name = format!("{side} {:.0} {tilt} {:.0}", f64::abs(lao), f64::abs(cran));
        out.push((name, c.projection().unwrap()));
    }
    out
}

fn rel_l2(gpu: &Image, cpu: &Image) -> f64 {
    assert_eq!((gpu.width, gpu.height), (cpu.width, cpu.height));
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (g, c) in gpu.data.iter().zip(&cpu.data) {
        num += (f64::from(*g) - f64::from(*c)).powi(2);
        den += f64::from(*c).powi(2);
    }
    assert!(den > 0.0, "CPU reference image is empty");
    (num / den).sqrt()
}

fn compare_with_cpu(label: &str, ctx: &GpuContext, mu: &Volume<f32>, pixel_mm: f64, tol: f64) {
    let mut drr = GpuDrr::new(ctx, mu).unwrap();
    eprintln!(
        "{label}: {:.1} % of 8³ blocks empty",
        100.0 * drr.empty_block_fraction()
    );
    let poses = poses(mu, pixel_mm);
    let projections: Vec<Projection> = poses.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(
        drr.empty_space_skipping(),
        drr.empty_block_fraction() >= 0.05
    );
    drr.set_empty_space_skipping(true);
    let batch = drr.render_batch(&projections, SAMPLES).unwrap();
    // Empty-space skipping takes the same samples in the same order: same result.
    drr.set_empty_space_skipping(false);
    let full = drr.render_batch(&projections, SAMPLES).unwrap();
    drr.set_empty_space_skipping(true);
    for ((name, _), (skipped, full)) in poses.iter().zip(batch.iter().zip(&full)) {
        let d = rel_l2(skipped, full);
        assert!(
            d <= 1e-6,
            "{label} {name}: skipping empty space changed the image by {d:.3e}"
        );
    }
    let mut worst = 0.0f64;
    for ((name, p), gpu_batch) in poses.iter().zip(&batch) {
        let cpu = render(mu, p, Integrator::TrilinearSamples(SAMPLES));
        let gpu = drr.render(p, SAMPLES).unwrap();
        let err = rel_l2(&gpu, &cpu);
        let err_batch = rel_l2(gpu_batch, &cpu);
        eprintln!(
            "{label}: {name}: rel L2 GPU vs CPU {err:.3e} (batch {err_batch:.3e}), \
             CPU max {:.3}",
            cpu.data.iter().cloned().fold(0.0f32, f32::max)
        );
        assert!(err <= tol, "{label} {name}: rel L2 {err:.3e} > {tol:.0e}");
        assert!(
            err_batch <= tol,
            "{label} {name} (batch): rel L2 {err_batch:.3e} > {tol:.0e}"
        );
        worst = worst.max(err).max(err_batch);
    }
    eprintln!(
        "{label}: worst rel L2 {worst:.3e} over {} poses",
        poses.len()
    );
}

#[test]
fn synthetic_volume_matches_cpu_trilinear() {
    let Some(ctx) = gpu() else { return };
    compare_with_cpu("synthetic", ctx, &synthetic(), 1.0, TOLERANCE);
}

#[test]
fn empty_space_skipping_is_exact_on_a_sparse_volume() {
    let Some(ctx) = gpu() else { return };
    let mu = sparse();
    let drr = GpuDrr::new(ctx, &mu).unwrap();
    assert!(drr.empty_space_skipping());
    assert!(
        drr.empty_block_fraction() > 0.5,
        "{}",
        drr.empty_block_fraction()
    );
    compare_with_cpu("sparse", ctx, &mu, 1.0, TOLERANCE);
}

#[test]
fn air_threshold_skips_more_and_bounds_the_error() {
    let Some(ctx) = gpu() else { return };
    // Noisy air: 0.0005 /mm everywhere outside the objects.
    let mut mu = sparse();
    for v in mu.data_mut() {
        if *v == 0.0 {
            *v = 0.0005;
        }
    }
    let mut drr = GpuDrr::new(ctx, &mu).unwrap();
    assert_eq!(drr.empty_block_fraction(), 0.0);
    assert!(!drr.empty_space_skipping());
    let p = poses(&mu, 1.0).remove(2).1;
    let full = drr.render(&p, SAMPLES).unwrap();
    drr.set_air_threshold(0.001);
    drr.set_empty_space_skipping(true);
    assert!(drr.empty_block_fraction() > 0.5);
    let skipped = drr.render(&p, SAMPLES).unwrap();
    // Each ray loses at most threshold × its length in the volume (< 150 mm here).
    for (s, f) in skipped.data.iter().zip(&full.data) {
        assert!(s <= f && f - s <= 0.0005 * 150.0 + 1e-5, "{s} vs {f}");
    }
    assert!(skipped.data.iter().zip(&full.data).any(|(s, f)| s < f));
}

#[test]
fn abdomen_ct_matches_cpu_trilinear() {
    let Some(ctx) = gpu() else { return };
    compare_with_cpu("abdomen CT", ctx, &abdomen_mu(), 4.0, TOLERANCE);
}

#[test]
fn r16float_fallback_stays_close_to_cpu() {
    let Some(ctx) = gpu() else { return };
    let ctx = ctx.clone().prefer_r16float();
    assert_eq!(ctx.volume_format_name(), "R16Float");
    // Half precision rounds each voxel by up to 2⁻¹¹ relative.
    compare_with_cpu("synthetic, R16Float", &ctx, &synthetic(), 1.0, 2e-3);
}

#[test]
fn batch_equals_individual_renders_and_volume_is_reused() {
    let Some(ctx) = gpu() else { return };
    let mu = synthetic();
    let drr = GpuDrr::new(ctx, &mu).unwrap();
    let mut projections: Vec<Projection> = poses(&mu, 1.0).into_iter().map(|(_, p)| p).collect();
    // Mixed detector sizes in one batch.
    let mut odd = CArm::new(mu.grid().center_lps());
    odd.lao_deg = 15.0;
    odd.detector = Detector {
        width: 37,
        height: 53,
        pixel_mm: 2.5,
    };
    projections.push(odd.projection().unwrap());
    let first = drr.render_batch(&projections, SAMPLES).unwrap();
    let second = drr.render_batch(&projections, SAMPLES).unwrap();
    assert_eq!(
        first, second,
        "a second batch over the same uploaded volume differs"
    );
    assert_eq!(first.len(), projections.len());
    for (p, b) in projections.iter().zip(&first) {
        let single = drr.render(p, SAMPLES).unwrap();
        assert_eq!((b.width, b.height), (p.width, p.height));
        assert_eq!(&single, b, "batch and single render differ");
    }
    assert!(drr.render_batch(&[], SAMPLES).unwrap().is_empty());
}

#[test]
fn rays_missing_the_volume_are_zero_and_image_is_oriented() {
    let Some(ctx) = gpu() else { return };
    let mu = synthetic();
    let drr = GpuDrr::new(ctx, &mu).unwrap();
    let mut c = CArm::new(mu.grid().center_lps());
    c.source_anterior = true;
    c.detector = Detector {
        width: 96,
        height: 64,
        pixel_mm: 3.0,
    };
    let p = c.projection().unwrap();
    let gpu = drr.render(&p, SAMPLES).unwrap();
    let cpu = render(&mu, &p, Integrator::TrilinearSamples(SAMPLES));
    // Corners of a wide detector see only air.
    assert_eq!(gpu.get(0, 0), 0.0);
    assert_eq!(gpu.get(95, 63), 0.0);
    assert!(rel_l2(&gpu, &cpu) <= TOLERANCE);
    // The brightest pixel is the same one (no transposed or flipped axes).
    let argmax = |im: &Image| {
        (0..im.data.len())
            .max_by(|&a, &b| im.data[a].total_cmp(&im.data[b]))
            .unwrap()
    };
    assert_eq!(argmax(&gpu), argmax(&cpu));
}

#[test]
fn kernel_timestamps_when_available() {
    let Some(ctx) = gpu() else { return };
    let mu = synthetic();
    let drr = GpuDrr::new(ctx, &mu).unwrap();
    let p = poses(&mu, 1.0).remove(0).1;
    match drr.render_batch_timed(std::slice::from_ref(&p), 64) {
        Ok(t) => {
            assert_eq!(t.images.len(), 1);
            assert!(t.kernel.is_some());
            eprintln!("kernel time of one 128² DRR at 64 samples: {:?}", t.kernel);
        }
        Err(pinhole_gpu::GpuError::FeatureMissing(_)) => assert!(!ctx.has_timestamps()),
        Err(e) => panic!("{e}"),
    }
}
