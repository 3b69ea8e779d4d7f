//! Assembles what `pinhole serve` gives the web viewer: the CT and labels as in-memory
//! NIfTI files, the label table with colours, plan paths and vessel routes as lines,
//! overlay volumes, and the scene for server-side DRRs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use pinhole_io::labels::LabelTable;
use pinhole_io::AnyVolume;
use pinhole_server::viewer::{DrrScene, LabelColor, Line, LineIntegrals, OverlayVolume, Viewer};
use pinhole_volume::Volume;
use serde_json::Value;

/// Organs outlined on the viewer's DRRs when present.
const DRR_ORGANS: [&str; 5] = [
    "liver",
    "kidney_left",
    "kidney_right",
    "aorta",
    "thyroid_gland",
];

pub struct ViewerInputs<'a> {
    pub title: String,
    pub ct: &'a AnyVolume,
    pub labels: &'a Volume<u16>,
    pub table: &'a LabelTable,
    /// plan.json files (needle plans): every path becomes a line, the first the best.
    pub plans: &'a [PathBuf],
    /// route.json files (vessel routes): `points_lps`.
    pub routes: &'a [PathBuf],
    /// Volumes drawn over the CT (e.g. an ablation `zone.seg.nrrd`).
    pub overlays: &'a [PathBuf],
    /// Render the viewer's DRRs on the GPU (falls back to the CPU with a warning).
    pub gpu: bool,
}

pub fn build(inputs: &ViewerInputs) -> anyhow::Result<Viewer> {
    let mut viewer = Viewer {
        title: inputs.title.clone(),
        ..Viewer::default()
    };
    let ct_hu = AnyVolume::from(inputs.ct.to_volume::<i16>());
    add_file(
        &mut viewer,
        "ct.nii.gz",
        pinhole_io::nifti::to_gzip_bytes(&ct_hu, "ct.nii.gz")?,
    );
    let labels = AnyVolume::from(inputs.labels.map(|v| i16::try_from(v).unwrap_or(i16::MAX)));
    add_file(
        &mut viewer,
        "labels.nii.gz",
        pinhole_io::nifti::to_gzip_bytes(&labels, "labels.nii.gz")?,
    );
    let present = pinhole_volume::label_stats(inputs.labels);
    viewer.labels = present
        .keys()
        .map(|&id| LabelColor {
            id,
            name: inputs.table.name(id).unwrap_or("?").to_string(),
            color: inputs.table.color_of(id),
        })
        .collect();
    for plan in inputs.plans {
        viewer.lines.extend(plan_lines(plan)?);
    }
    for route in inputs.routes {
        viewer.lines.push(route_line(route)?);
    }
    for overlay in inputs.overlays {
        add_overlay(&mut viewer, overlay)?;
    }
    let organs = DRR_ORGANS
        .iter()
        .filter_map(|n| inputs.table.id_of(n))
        .filter(|id| present.contains_key(id))
        .filter_map(|id| Some((u16::try_from(id).ok()?, inputs.table.color_of(id))))
        .collect();
    let mu =
        pinhole_io::with_volume!(inputs.ct, v => pinhole_xray::Attenuation::default().mu_volume(v));
    let accelerated = if inputs.gpu { gpu_renderer(&mu) } else { None };
    viewer.drr = Some(DrrScene {
        mu,
        labels: inputs.labels.clone(),
        organs,
        lines: viewer.lines.clone(),
        accelerated,
    });
    Ok(viewer)
}

/// Serves any volume Pinhole reads (e.g. an ablation `zone.seg.nrrd`) as a 0/1 NIfTI
/// mask, which every viewer colours the same way.
fn add_overlay(viewer: &mut Viewer, path: &Path) -> anyhow::Result<()> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|n| !n.is_empty())
        .with_context(|| format!("{}: no file name", path.display()))?
        .to_string();
    let volume = super::load(path, None)?.volume;
    let mask = AnyVolume::from(volume.to_f32().map(|v| u8::from(v != 0.0)));
    let name = format!("{stem}.nii.gz");
    add_file(
        viewer,
        &name,
        pinhole_io::nifti::to_gzip_bytes(&mask, &name)?,
    );
    viewer.overlays.push(OverlayVolume {
        url: format!("/data/{name}"),
        name,
        opacity: 0.5,
    });
    Ok(())
}

/// The wgpu DRR renderer (GPU_DRR_SAMPLES samples per ray), or `None` with a warning.
fn gpu_renderer(mu: &Volume<f32>) -> Option<Box<dyn LineIntegrals>> {
    let made = pinhole_gpu::GpuContext::new().and_then(|ctx| pinhole_gpu::GpuDrr::new(&ctx, mu));
    match made {
        Ok(drr) => Some(Box::new(GpuLineIntegrals(drr))),
        Err(err) => {
            eprintln!("warning: --gpu: {err}; the viewer's DRRs use the CPU");
            None
        }
    }
}

const GPU_DRR_SAMPLES: usize = 500;

struct GpuLineIntegrals(pinhole_gpu::GpuDrr);

impl LineIntegrals for GpuLineIntegrals {
    fn name(&self) -> &str {
        "gpu"
    }
    fn render(&self, projection: &pinhole_xray::Projection) -> Result<pinhole_xray::Image, String> {
        self.0
            .render(projection, GPU_DRR_SAMPLES)
            .map_err(|e| e.to_string())
    }
}

fn add_file(viewer: &mut Viewer, name: &str, bytes: Vec<u8>) {
    let content_type = "application/octet-stream";
    viewer
        .files
        .insert(name.to_string(), (content_type, Arc::from(bytes)));
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))
}

fn point(value: &Value) -> Option<[f64; 3]> {
    let v: Vec<f64> = serde_json::from_value(value.clone()).ok()?;
    v.try_into().ok()
}

fn plan_lines(path: &Path) -> anyhow::Result<Vec<Line>> {
    let (procedure, paths) = super::read_plan_paths(path)?;
    Ok(paths
        .into_iter()
        .enumerate()
        .map(|(n, p)| Line {
            name: if n == 0 {
                format!("{procedure} #1 (best)")
            } else {
                format!("{procedure} #{}", n + 1)
            },
            kind: if n == 0 { "plan" } else { "alternative" }.into(),
            points_lps: vec![p.entry_lps, p.target_lps],
            length_mm: p.length_mm,
        })
        .collect())
}

fn route_line(path: &Path) -> anyhow::Result<Line> {
    let route = read_json(path)?;
    // `points_lps` at the top level or under `route` (pinhole plan vessel's layout).
    let points_value = match &route["points_lps"] {
        Value::Null => &route["route"]["points_lps"],
        top => top,
    };
    let points: Vec<[f64; 3]> = points_value
        .as_array()
        .with_context(|| format!("{}: no \"points_lps\" array", path.display()))?
        .iter()
        .filter_map(point)
        .collect();
    let vessels: Vec<&str> = route["vessels"]
        .as_array()
        .map(|v| v.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    Ok(Line {
        name: format!("route {}", vessels.join(" → ")),
        kind: "route".into(),
        points_lps: points,
        length_mm: route["length_mm"].as_f64(),
    })
}

/// The built viewer (`web/dist`) next to the working directory or the executable
/// (`target/release/pinhole` → `web/dist` of the checkout).
pub fn find_web_dist() -> Option<PathBuf> {
    let from_cwd = std::env::current_dir().ok().map(|d| d.join("web/dist"));
    let from_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.ancestors()
            .map(|a| a.join("web/dist"))
            .find(|p| p.join("index.html").is_file())
    });
    from_cwd
        .filter(|p| p.join("index.html").is_file())
        .or(from_exe)
}
