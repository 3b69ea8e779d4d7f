//! The viewer's fluoroscopy panel (`/api/drr`) timed on a CT: prints one JSON object with
//! the scene preparation time and, per quality (`preview` while a C-arm slider moves,
//! `full` when it rests), the median time of the whole request body (render, organ tint,
//! plan line, PNG) over slider-like poses 3° apart, plus the CPU's exact Siddon render
//! and the old per-voxel organ path lengths for comparison.
//!
//! `viewer-drr --ct CT.nii.gz --labels LABELS.nii.gz [--size 512] [--poses 10]`
//!
//! Organs tinted: TotalSegmentator v2 ids of liver, both kidneys, aorta and thyroid (the
//! viewer's set).

use std::time::Instant;

use pinhole_guidance::scene::{DrrPose, DrrQuality, DrrScene, Line};
use pinhole_xray::{render, Attenuation, CArm, Detector, Integrator};

const ORGANS: [(u16, [u8; 3]); 5] = [
    (5, [221, 130, 101]),
    (2, [185, 102, 83]),
    (3, [185, 102, 83]),
    (52, [224, 97, 76]),
    (17, [128, 174, 128]),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let ct_path = value("--ct").ok_or_else(|| anyhow::anyhow!("--ct CT.nii.gz"))?;
    let labels_path = value("--labels").ok_or_else(|| anyhow::anyhow!("--labels L.nii.gz"))?;
    let size: usize = value("--size").map_or(Ok(512), |v| v.parse())?;
    let poses: usize = value("--poses").map_or(Ok(10), |v| v.parse())?.max(1);
    let ct = pinhole_io::nifti::read(std::path::Path::new(&ct_path))?;
    let labels = pinhole_io::nifti::read(std::path::Path::new(&labels_path))?.to_volume::<u16>();
    let mu = pinhole_io::with_volume!(&ct, v => Attenuation::default().mu_volume(v));
    let centre = mu.grid().center_lps();
    let line = Line {
        name: "plan".into(),
        kind: "plan".into(),
        points_lps: vec![[centre[0] + 80.0, centre[1] + 60.0, centre[2]], centre],
        length_mm: None,
    };
    let t = Instant::now();
    let scene = DrrScene::new(mu.clone(), &labels, &ORGANS, vec![line], None);
    let prepare_ms = ms(t);
    let never = || false;
    let mut result = serde_json::json!({
        "ct": ct_path, "size": size, "poses": poses, "threads": rayon::current_num_threads(),
        "prepare_ms": prepare_ms,
    });
    for (name, quality) in [("preview", DrrQuality::Preview), ("full", DrrQuality::Full)] {
        let times: Vec<f64> = (0..poses)
            .map(|n| {
                let pose = DrrPose {
                    lao_deg: 3.0 * n as f64,
                    cran_deg: 0.0,
                    size,
                };
                let t = Instant::now();
                scene
                    .render_png(pose, quality, &never)
                    .map(|png| (ms(t), png.len()))
            })
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .map(|(t, _)| t)
            .collect();
        result[format!("{name}_ms")] = median(times).into();
    }
    let (mut siddon, mut per_voxel_organs) = (vec![], vec![]);
    let ids: Vec<u16> = ORGANS.iter().map(|(id, _)| *id).collect();
    for n in 0..poses.min(3) {
        let mut carm = CArm::new(centre);
        carm.lao_deg = 3.0 * n as f64;
        let field_mm = carm.detector.width as f64 * carm.detector.pixel_mm;
        carm.detector = Detector {
            width: size,
            height: size,
            pixel_mm: field_mm / size as f64,
        };
        let p = carm.projection()?;
        let t = Instant::now();
        let _ = render(&mu, &p, Integrator::Siddon);
        siddon.push(ms(t));
        let t = Instant::now();
        let _ = pinhole_xray::project_labels(&labels, &ids, &p);
        per_voxel_organs.push(ms(t));
    }
    result["siddon_full_ct_ms"] = median(siddon).into();
    result["per_voxel_organ_lengths_ms"] = median(per_voxel_organs).into();
    println!("{result}");
    Ok(())
}
