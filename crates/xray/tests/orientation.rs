//! Orientation of the rendered views, checked with label projections of the chest CT's
//! segmentation (`../shared/data/chest-ct/labels.nii.gz`, TotalSegmentator classes named
//! in `structures.csv`).
//!
//! Expected sides come from the convention in `geometry.rs`, not from the renderer:
//! * frontal (LAO 0 / CRAN 0), whichever side the source is on: the patient's head at the
//!   top, the patient's right on the viewer's left;
//! * LAO 90: the detector at the patient's left, display right `u = +y` (LPS), i.e. the
//!   patient's posterior on the viewer's right; RAO 90 mirrors it (`u = −y`: posterior on
//!   the viewer's left).
//!
//! The 3-D centroids of the same labels are checked first, so that a wrong segmentation
//! cannot make a wrong renderer pass.

use pinhole_io::labels::LabelTable;
use pinhole_volume::{Vec3, Volume};
use pinhole_xray::{project_labels, CArm, Detector, Image, Projection};

use crate::common::shared_data;

struct Labels {
    volume: Volume<u16>,
    table: LabelTable,
}

fn chest_labels() -> Labels {
    let path = shared_data("chest-ct/labels.nii.gz");
    let volume = pinhole_io::nifti::read(&path)
        .unwrap()
        .to_labels()
        .expect("label map");
    let table_path = shared_data("chest-ct/structures.csv");
    let table = LabelTable::load(table_path.to_str().unwrap()).unwrap();
    Labels { volume, table }
}

impl Labels {
    fn id(&self, name: &str) -> u16 {
        let id = self
            .table
            .id_of(name)
            .unwrap_or_else(|| panic!("{name} not in structures.csv"));
        u16::try_from(id).unwrap()
    }

    /// Ids of every table entry whose name starts with `prefix`.
    fn ids_with_prefix(&self, prefix: &str) -> Vec<u16> {
        self.table
            .iter()
            .filter(|(_, e)| e.name.starts_with(prefix))
            .map(|(id, _)| u16::try_from(id).unwrap())
            .collect()
    }

    /// LPS centroid of the voxels carrying any of `ids`.
    fn centroid_lps(&self, ids: &[u16]) -> Vec3 {
        let grid = self.volume.grid();
        let [nx, ny, _] = grid.dims();
        let (mut sum, mut n) = ([0.0; 3], 0usize);
        for (offset, v) in self.volume.data().iter().enumerate() {
            if ids.contains(v) {
                let ijk = [offset % nx, (offset / nx) % ny, offset / (nx * ny)];
                for a in 0..3 {
                    sum[a] += ijk[a] as f64;
                }
                n += 1;
            }
        }
        assert!(n > 0, "labels {ids:?} are empty");
        grid.index_to_world(sum.map(|s| s / n as f64))
    }
}

/// Path-length-weighted centroid (col, row) of the summed label images.
fn projected_centroid(images: &[Image]) -> (f64, f64) {
    let (w, h) = (images[0].width, images[0].height);
    let (mut sw, mut sc, mut sr) = (0.0, 0.0, 0.0);
    for row in 0..h {
        for col in 0..w {
            let v: f64 = images.iter().map(|i| f64::from(i.get(col, row))).sum();
            sw += v;
            sc += v * col as f64;
            sr += v * row as f64;
        }
    }
    assert!(sw > 0.0, "label not in view");
    (sc / sw, sr / sw)
}

/// Default C-arm (isocentre = grid centre) with a 128² detector at 3.125 mm, the same
/// 400 mm field as the default 512² at 0.78125 mm.
fn carm(labels: &Labels, lao: f64, source_anterior: bool) -> Projection {
    let mut c = CArm::new(labels.volume.grid().center_lps());
    c.lao_deg = lao;
    c.source_anterior = source_anterior;
    c.detector = Detector {
        width: 128,
        height: 128,
        pixel_mm: 3.125,
    };
    c.projection().unwrap()
}

/// Projected centroids of each group of labels in one view.
fn centroids(labels: &Labels, proj: &Projection, groups: &[&[u16]]) -> Vec<(f64, f64)> {
    let ids: Vec<u16> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let images = project_labels(&labels.volume, &ids, proj);
    let mut start = 0;
    groups
        .iter()
        .map(|g| {
            let c = projected_centroid(&images[start..start + g.len()]);
            start += g.len();
            c
        })
        .collect()
}

#[test]
fn frontal_and_lateral_views_put_organs_on_the_expected_sides() {
    let labels = chest_labels();
    let liver = [labels.id("liver")];
    let kidney_right = [labels.id("kidney_right")];
    let kidney_left = [labels.id("kidney_left")];
    let thyroid = [labels.id("thyroid_gland")];
    let heart = [labels.id("heart")];
    let spine = labels.ids_with_prefix("vertebrae_");
    assert!(spine.len() >= 20, "vertebrae in the table: {spine:?}");

    // The data's own anatomy, in LPS (+x left, +y posterior, +z superior).
    let iso = labels.volume.grid().center_lps();
    let c_liver = labels.centroid_lps(&liver);
    let c_spine = labels.centroid_lps(&spine);
    let c_heart = labels.centroid_lps(&heart);
    assert!(c_liver[0] < iso[0], "liver not on the patient's right");
    assert!(labels.centroid_lps(&kidney_left)[0] > labels.centroid_lps(&kidney_right)[0]);
    assert!(labels.centroid_lps(&thyroid)[2] > labels.centroid_lps(&kidney_left)[2]);
    assert!(
        c_spine[1] > iso[1] && c_spine[1] > c_heart[1],
        "spine not posterior"
    );

    let groups: [&[u16]; 6] = [
        &liver,
        &kidney_right,
        &kidney_left,
        &thyroid,
        &heart,
        &spine,
    ];
    let half = 127.0 / 2.0;
    for source_anterior in [false, true] {
        let proj = carm(&labels, 0.0, source_anterior);
        let c = centroids(&labels, &proj, &groups);
        let [liver, kidney_r, kidney_l, thyroid, _, _] = [c[0], c[1], c[2], c[3], c[4], c[5]];
        println!(
            "frontal (source anterior: {source_anterior}): liver {liver:.1?} kidneys R {kidney_r:.1?} \
             L {kidney_l:.1?} thyroid {thyroid:.1?}"
        );
        assert!(liver.0 < half, "liver on the viewer's right: {liver:?}");
        assert!(
            thyroid.1 < kidney_r.1 && thyroid.1 < kidney_l.1,
            "thyroid not above the kidneys"
        );
        assert!(
            kidney_l.0 > kidney_r.0,
            "left kidney not right of the right kidney on the display"
        );
    }
    for (lao, posterior_right) in [(90.0, true), (-90.0, false)] {
        let proj = carm(&labels, lao, false);
        let c = centroids(&labels, &proj, &groups);
        let (heart, spine) = (c[4], c[5]);
        let centre = proj.project(iso).unwrap();
        println!("LAO {lao}: spine {spine:.1?} heart {heart:.1?} isocentre {centre:.1?}");
        if posterior_right {
            assert!(
                spine.0 > heart.0 && spine.0 > centre.0,
                "LAO 90: spine not on the right"
            );
        } else {
            assert!(
                spine.0 < heart.0 && spine.0 < centre.0,
                "RAO 90: spine not on the left"
            );
        }
        // The head stays at the top in lateral views.
        assert!(
            c[3].1 < c[1].1,
            "thyroid not above the kidneys at LAO {lao}"
        );
    }
}
