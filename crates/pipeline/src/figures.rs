//! The pictures and geometry files that go with reports: the route on a frontal
//! projection, the ablation zone's contours and the CT resliced along an applicator, the
//! registration overlay; each with orientation letters and a scale bar
//! (`pinhole_volume::annotate`). Drawing primitives live in `pinhole-xray::display`; files are
//! written by `pinhole-io`.

use std::path::Path;

use pinhole_ablation::plan::Plan as AblationPlan;
use pinhole_io::labels::LabelTable;
use pinhole_io::vtk::PolyLines;
use pinhole_volume::annotate::Canvas;
use pinhole_volume::math::{unit, DVec3};
use pinhole_volume::{Grid, Mask, Vec3, Volume};
use pinhole_xray::display::{
    compose_with_organs, draw_outline, draw_projected_polyline, fluoroscopy_gray, Window,
};
use pinhole_xray::{Attenuation, CArm, Detector, Image, Integrator, Projection};

use crate::error::{Error, Result};

/// An RGB picture, row 0 at the top (the needle planner's image type).
pub use pinhole_plan_needle::render::RgbImage as RgbPicture;

/// Writes a picture as an 8-bit RGB PNG.
pub fn write_picture(path: &Path, picture: &RgbPicture) -> Result<()> {
    let side = |n: usize| u32::try_from(n).map_err(|_| Error::invalid("picture too large"));
    pinhole_io::png::write_rgb8(
        path,
        side(picture.width)?,
        side(picture.height)?,
        &picture.rgb,
    )?;
    Ok(())
}

/// The route drawn on a frontal projection (LAO 0 / CRAN 0, 512², 0.9 mm pixels): the
/// CT's DRR when given, else white; the route's vessels in their label colours, the
/// route in yellow.
pub fn route_picture(
    labels: &Volume<u16>,
    ct: Option<&Volume<f32>>,
    vessels: &[(u32, String)],
    table: &LabelTable,
    route_lps: &[Vec3],
) -> Result<RgbPicture> {
    let grid: &Grid = ct.map_or(labels.grid(), |c| c.grid());
    let mut carm = CArm::new(grid.center_lps());
    carm.detector = Detector {
        width: 512,
        height: 512,
        pixel_mm: 0.9,
    };
    let projection: Projection = carm.projection()?;
    let ids: Vec<u16> = vessels
        .iter()
        .filter_map(|v| u16::try_from(v.0).ok())
        .collect();
    let gray = match ct {
        Some(ct) => {
            let mu = Attenuation::default().mu_volume(ct);
            let image = pinhole_xray::render(&mu, &projection, Integrator::TrilinearSamples(300));
            fluoroscopy_gray(&image, Window::from_percentiles(&image, 1.0, 99.0))
        }
        None => vec![255u8; projection.width * projection.height],
    };
    let organs: Vec<(u16, [u8; 3])> = ids
        .iter()
        .map(|&id| (id, table.color_of(u32::from(id))))
        .collect();
    let mut rgb = compose_with_organs(&gray, labels, &organs, &projection);
    draw_projected_polyline(&mut rgb, &projection, route_lps, [255, 220, 0], 2);
    annotate_projection(&mut rgb, &projection, carm.isocenter_lps);
    Ok(RgbPicture {
        width: projection.width,
        height: projection.height,
        rgb,
    })
}

/// A mask's boundary as contour segments on every axial slice (marching squares at 0.5
/// between voxel centres), in LPS mm.
pub fn axial_contours(mask: &Mask) -> PolyLines {
    let grid = mask.grid();
    let [nx, ny, nz] = grid.dims();
    let at = |i: usize, j: usize, k: usize| mask.data()[i + nx * (j + ny * k)];
    let mut lines = PolyLines::default();
    for k in 0..nz {
        for j in 0..ny.saturating_sub(1) {
            for i in 0..nx.saturating_sub(1) {
                let corners = [
                    at(i, j, k),
                    at(i + 1, j, k),
                    at(i + 1, j + 1, k),
                    at(i, j + 1, k),
                ];
                for (a, b) in square_segments(corners) {
                    let to_world = |(u, v): (f64, f64)| {
                        grid.index_to_world([i as f64 + u, j as f64 + v, k as f64])
                    };
                    let n = lines.points_lps.len();
                    lines.points_lps.push(to_world(a));
                    lines.points_lps.push(to_world(b));
                    lines.lines.push(vec![n, n + 1]);
                }
            }
        }
    }
    lines
}

/// The contour segments of one marching-squares cell (corners in edge order from
/// (0,0)): edge midpoints where the corners differ, joined in edge order (a saddle gives
/// two segments).
fn square_segments(c: [bool; 4]) -> Vec<((f64, f64), (f64, f64))> {
    if c.iter().all(|&b| b == c[0]) {
        return Vec::new();
    }
    let corners = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)];
    let cross: Vec<(f64, f64)> = (0..4)
        .filter(|&e| c[e] != c[(e + 1) % 4])
        .map(|e| {
            let (a, b) = (corners[e], corners[(e + 1) % 4]);
            ((a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0)
        })
        .collect();
    let pairs: &[(usize, usize)] = if cross.len() == 4 {
        &[(0, 1), (2, 3)]
    } else {
        &[(0, 1)]
    };
    pairs.iter().map(|&(a, b)| (cross[a], cross[b])).collect()
}

/// Side of the applicator picture (pixels) and its pixel size (mm).
const SLICE_SIZE_PX: usize = 320;
const SLICE_PIXEL_MM: f64 = 0.4;

/// The CT resliced through the first applicator's axis (soft-tissue window), with the
/// outlines of the tumour (yellow), tumour + margin (cyan) and zone (red) and the
/// applicator shafts (green). `None` without a zone.
pub fn applicator_slice(ct: &Volume<f32>, tumor: &Mask, plan: &AblationPlan) -> Option<RgbPicture> {
    let first = plan.zones.first()?;
    let axis = DVec3::from(first.axis_lps);
    // In-plane direction across the axis: the LPS axis most perpendicular to it.
    let helper = [DVec3::X, DVec3::Z, DVec3::Y]
        .into_iter()
        .min_by(|a, b| a.dot(axis).abs().total_cmp(&b.dot(axis).abs()))
        .unwrap_or(DVec3::X);
    let across = unit(helper - axis * helper.dot(axis)).unwrap_or(DVec3::X);
    let centre = DVec3::from(first.center_lps);
    let (size, pixel_mm) = (SLICE_SIZE_PX, SLICE_PIXEL_MM);
    let half = size as f64 * pixel_mm / 2.0;
    let world = |r: usize, c: usize| -> Vec3 {
        let u = -half + (c as f64 + 0.5) * pixel_mm;
        let v = -half + (r as f64 + 0.5) * pixel_mm;
        (centre + (across * u + axis * v)).to_array()
    };
    let mut rgb = vec![0u8; size * size * 3];
    let mut masks = vec![[false; 3]; size * size];
    for r in 0..size {
        for c in 0..size {
            let p = world(r, c);
            let hu = ct.sample_trilinear(p).unwrap_or(-1000.0);
            let g = (((hu - (40.0 - 200.0)) / 400.0).clamp(0.0, 1.0) * 255.0) as u8;
            let o = (r * size + c) * 3;
            rgb[o..o + 3].copy_from_slice(&[g, g, g]);
            masks[r * size + c] = [
                tumor.sample_nearest(p).unwrap_or(false),
                plan.margin_region.sample_nearest(p).unwrap_or(false),
                plan.zone_mask.sample_nearest(p).unwrap_or(false),
            ];
        }
    }
    outline_masks(&mut rgb, &masks, size);
    // Applicator shafts: from the tip back along the axis, projected onto the plane.
    for z in &plan.zones {
        for s in 0..(3.0 * half / pixel_mm) as usize {
            let d = DVec3::from(z.tip_lps) - axis * (s as f64 * pixel_mm) - centre;
            let c = ((d.dot(across) + half) / pixel_mm).floor();
            let r = ((d.dot(axis) + half) / pixel_mm).floor();
            if (0.0..size as f64).contains(&c) && (0.0..size as f64).contains(&r) {
                let o = (r as usize * size + c as usize) * 3;
                rgb[o..o + 3].copy_from_slice(&[40, 255, 40]);
            }
        }
    }
    // Letters and scale last, over the outlines and shafts.
    let mut canvas = Canvas {
        rgb: &mut rgb,
        width: size,
        height: size,
    };
    canvas.orientation_letters(across.to_array(), axis.to_array());
    canvas.scale_bar(pixel_mm);
    Some(RgbPicture {
        width: size,
        height: size,
        rgb,
    })
}

/// Colours the edge pixels of three masks (tumour, margin, zone) on a square picture.
fn outline_masks(rgb: &mut [u8], masks: &[[bool; 3]], size: usize) {
    let colours = [[255u8, 220, 0], [0, 220, 255], [255, 40, 40]];
    for r in 1..size - 1 {
        for c in 1..size - 1 {
            for (m, colour) in colours.iter().enumerate() {
                let here = masks[r * size + c][m];
                let edge = here
                    && [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
                        .iter()
                        .any(|&(rr, cc)| !masks[rr * size + cc][m]);
                if edge {
                    let o = (r * size + c) * 3;
                    rgb[o..o + 3].copy_from_slice(colour);
                }
            }
        }
    }
}

/// A live X-ray (bone dark) with outlines of projected structures and lines drawn on it,
/// orientation letters and a scale bar at `reference_lps` (e.g. the isocentre).
pub fn xray_overlay(
    integral: &Image,
    outlines: &[(Image, [u8; 3])],
    lines: &[(Vec<Vec3>, [u8; 3])],
    projection: &Projection,
    reference_lps: Vec3,
) -> RgbPicture {
    let shifted = shifted_positive(integral);
    let window = Window::from_percentiles(&shifted, 1.0, 99.0);
    let gray = fluoroscopy_gray(&shifted, window);
    let mut rgb: Vec<u8> = gray.iter().flat_map(|&g| [g; 3]).collect();
    for (lengths, color) in outlines {
        draw_outline(&mut rgb, lengths, *color);
    }
    for (points, color) in lines {
        draw_projected_polyline(&mut rgb, projection, points, *color, 1);
    }
    annotate_projection(&mut rgb, projection, reference_lps);
    RgbPicture {
        width: integral.width,
        height: integral.height,
        rgb,
    }
}

/// Orientation letters from the detector's axes and a scale bar for objects at
/// `reference_lps` (a projection magnifies by source-to-detector over source-to-object
/// distance along the central ray).
fn annotate_projection(rgb: &mut [u8], projection: &Projection, reference_lps: Vec3) {
    let (w, h) = (projection.width, projection.height);
    let col = DVec3::from(projection.col_step);
    let row = DVec3::from(projection.row_step);
    let source = DVec3::from(projection.source_lps);
    let centre = DVec3::from(projection.pixel00_lps)
        + col * ((w as f64 - 1.0) / 2.0)
        + row * ((h as f64 - 1.0) / 2.0);
    let sid = (centre - source).length();
    let sod = (DVec3::from(reference_lps) - source).dot((centre - source) / sid);
    let mut canvas = Canvas {
        rgb,
        width: w,
        height: h,
    };
    canvas.orientation_letters(projection.col_step, projection.row_step);
    if sid > 0.0 && sod > 0.0 {
        canvas.scale_bar(col.length() * sod / sid);
    }
}

/// The image shifted so its minimum is just above zero (the display window ignores zeros).
fn shifted_positive(image: &Image) -> Image {
    let min = image.data.iter().copied().fold(f32::INFINITY, f32::min);
    Image {
        width: image.width,
        height: image.height,
        data: image.data.iter().map(|v| v - min + 1e-6).collect(),
    }
}
