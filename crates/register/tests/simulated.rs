//! A small version of the acceptance study on the real chest CT: X-rays simulated
//! at known poses (another HU→μ model, Poisson noise) are registered from the nominal
//! frontal view; the mean target registration error over the label centroids must be
//! under 2 mm. The full 50-pose study is `register-study` (bench/register.sh).

use std::sync::OnceLock;

use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_register::cmaes::Rng;
use pinhole_register::simulate::{label_centroids, mtre, random_pose, simulate_xray, XrayModel};
use pinhole_register::volume_prep::{downsample_mean, factors_for, mu_pyramid};
use pinhole_register::{
    default_levels, register, CArmPose, CpuRenderer, LevelSpec, Polarity, Pose, Renderer, Search,
    Settings,
};
use pinhole_volume::{Vec3, Volume};
use pinhole_xray::{Attenuation, CArm, Detector};

use crate::shared::shared_data;

/// A global search at 8 mm (32² detector), a Gauss–Newton refinement at 4 mm (96²).
const LEVELS_MM: [f64; 2] = [8.0, 4.0];

struct Fixture {
    /// Registration pyramid (default HU→μ model): [`LEVELS_MM`].
    renderers: Vec<CpuRenderer>,
    /// μ of the other model, at 2 mm, for the simulated X-rays.
    sim_mu: Volume<f32>,
    centroids: Vec<Vec3>,
    carm: CArm,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let opts = ReadOptions::default();
        let ct = read_volume(&shared_data("chest-ct/ct.nii.gz"), &opts, &mut |_, _| {})
            .unwrap()
            .volume
            .to_f32();
        let labels = read_volume(
            &shared_data("chest-ct/labels.nii.gz"),
            &opts,
            &mut |_, _| {},
        )
        .unwrap()
        .volume
        .to_labels()
        .unwrap();
        let centroids = label_centroids(&labels, 100)
            .into_iter()
            .map(|c| c.1)
            .collect();
        let model = XrayModel::default();
        let sim_full = model.mu_volume(&ct);
        let sim_mu =
            downsample_mean(&sim_full, factors_for(sim_full.grid().spacing_mm(), 2.0)).unwrap();
        drop(sim_full);
        let renderers = mu_pyramid(&ct, &Attenuation::default(), None, &LEVELS_MM)
            .unwrap()
            .into_iter()
            .map(|mu| CpuRenderer::new(mu, None))
            .collect();
        let mut carm = CArm::new(ct.grid().center_lps());
        carm.detector = Detector {
            width: 96,
            height: 96,
            pixel_mm: 400.0 / 96.0,
        };
        Fixture {
            renderers,
            sim_mu,
            centroids,
            carm,
        }
    })
}

#[test]
fn recovers_random_poses_from_simulated_noisy_xrays_under_2mm_mtre() {
    let f = fixture();
    let nominal = f.carm.projection().unwrap();
    let center = f.carm.isocenter_lps;
    let levels: Vec<(&dyn Renderer, LevelSpec)> = f
        .renderers
        .iter()
        .map(|r| r as &dyn Renderer)
        .zip(default_levels(&LEVELS_MM, f.carm.pixel_at_isocenter_mm()))
        .collect();
    let mut rng = Rng::new(2024);
    let model = XrayModel::default();
    for case in 0..3 {
        let truth = random_pose(&mut rng, center, 10.0, 20.0);
        let xray = simulate_xray(&f.sim_mu, &nominal, &truth, &model, 1.5, case).unwrap();
        let start = Pose::identity(center);
        let reg = register(&xray, &nominal, &start, &levels, &Settings::default()).unwrap();
        let err = mtre(&reg.pose, &truth, &f.centroids);
        let before = mtre(&start, &truth, &f.centroids);
        eprintln!(
            "case {case}: truth {:?} found {:?} mTRE {err:.2} mm (start {before:.1} mm), {} DRRs in {:.1} s",
            truth.params(),
            reg.pose.params(),
            reg.drrs_rendered,
            reg.seconds
        );
        assert_eq!(
            reg.polarity,
            Polarity::Intensity,
            "raw counts are bone-dark intensity"
        );
        assert!(err < 2.0, "case {case}: mTRE {err} mm (start {before} mm)");
        // The reported C-arm angles describe the same view as the pose.
        let angles = CArmPose::from_pose(&reg.pose, &f.carm).unwrap();
        let mut view = f.carm.clone();
        view.lao_deg = angles.lao_deg;
        view.cran_deg = angles.cran_deg;
        let axis = view.projection().unwrap().central_axis();
        let seen = reg.pose.projection(&nominal).unwrap().central_axis();
        assert!((0..3).all(|i| (axis[i] - seen[i]).abs() < 1e-9));
    }
}

#[test]
fn polarity_is_detected_for_bone_bright_and_bone_dark_images() {
    let f = fixture();
    let nominal = f.carm.projection().unwrap();
    let center = f.carm.isocenter_lps;
    let truth = Pose::from_params(&[2.0, -3.0, 4.0, 5.0, -6.0, 7.0], center);
    let model = XrayModel {
        photons_per_pixel: 0.0,
        ..XrayModel::default()
    };
    // Line integrals (bone bright) and their display (bone dark, linear).
    let line = simulate_xray(&f.sim_mu, &nominal, &truth, &model, 1.5, 0).unwrap();
    let mut display = line.clone();
    let max = display.data.iter().copied().fold(0.0f32, f32::max);
    display
        .data
        .iter_mut()
        .for_each(|v| *v = 255.0 * (1.0 - *v / max));
    let coarse: Vec<(&dyn Renderer, LevelSpec)> = vec![(
        &f.renderers[0] as &dyn Renderer,
        LevelSpec {
            detector_bin: 2,
            search: Search::Cmaes {
                sigma: 0.3,
                population: 8,
                max_generations: 1,
            },
        },
    )];
    let start = Pose::identity(center);
    for (image, want) in [
        (&line, Polarity::LineIntegral),
        (&display, Polarity::Inverted),
    ] {
        let reg = register(image, &nominal, &start, &coarse, &Settings::default()).unwrap();
        assert_eq!(reg.polarity, want, "{:?}", reg.polarity_scores);
    }
}
