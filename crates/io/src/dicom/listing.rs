//! Scanning a folder: the header of every DICOM image file, grouped into series.

use std::collections::BTreeMap;
use std::path::Path;

use dicom_dictionary_std::tags;

use super::enhanced::{expand_frames, is_enhanced};
use super::header::SliceHeader;
use super::parse::parse;
use super::seg_input::is_segmentation;
use super::{is_dicom_file, SeriesInfo};
use crate::error::{Error, ErrorKind, Result, WithPath};

pub(super) fn no_dicom(dir: &Path) -> Error {
    Error::new(
        dir,
        ErrorKind::NotMedicalImage("no DICOM image files in this folder".into()),
    )
}

/// Reads the header of every DICOM image file directly in `dir` (or of `dir` itself when
/// it is one DICOM file); an enhanced multi-frame object contributes one header per frame.
pub(super) fn read_headers(dir: &Path) -> Result<Vec<SliceHeader>> {
    let mut paths = Vec::new();
    if dir.is_file() {
        paths.push(dir.to_path_buf());
    } else {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::new(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::new(dir, e))?;
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            let path = entry.path();
            if !hidden && path.is_file() && is_dicom_file(&path) {
                paths.push(path);
            }
        }
    }
    paths.sort();
    let mut headers = Vec::with_capacity(paths.len());
    for path in paths {
        let bytes = std::fs::read(&path).with_path(&path)?;
        let obj = parse(&bytes, true).map_err(|m| Error::new(&path, ErrorKind::Dicom(m)))?;
        // Non-image objects (DICOMDIR, structured reports, ...) have no Rows: skip them.
        if obj.element_opt(tags::ROWS).ok().flatten().is_none() {
            continue;
        }
        let header = SliceHeader::from_object(path.clone(), &obj)
            .map_err(|m| Error::new(&path, ErrorKind::InvalidHeader(m)))?;
        // A Segmentation's frames are masks, not slices of an image: it stays one entry
        // (read as label input by `seg_input`), never outnumbering the CT beside it.
        let multi_frame = header.frames.is_some_and(|n| n > 1);
        if multi_frame && is_enhanced(&obj) && !is_segmentation(&obj) {
            let frames = expand_frames(&header, &obj)
                .map_err(|m| Error::new(&path, ErrorKind::InvalidHeader(m)))?;
            headers.extend(frames);
        } else if multi_frame && super::dose::is_dose_grid(&obj) {
            let frames = super::dose::expand_dose_frames(&header, &obj)
                .map_err(|m| Error::new(&path, ErrorKind::InvalidHeader(m)))?;
            headers.extend(frames);
        } else {
            headers.push(header);
        }
    }
    if headers.is_empty() {
        return Err(no_dicom(dir));
    }
    Ok(headers)
}

/// Groups headers by series, most slices first (ties by UID).
pub(super) fn group_series(headers: Vec<SliceHeader>) -> Vec<(SeriesInfo, Vec<SliceHeader>)> {
    let mut groups: BTreeMap<String, Vec<SliceHeader>> = BTreeMap::new();
    for h in headers {
        groups.entry(h.series_uid.clone()).or_default().push(h);
    }
    let mut out: Vec<(SeriesInfo, Vec<SliceHeader>)> = groups
        .into_iter()
        .filter_map(|(uid, slices)| {
            let first = slices.first()?;
            let info = SeriesInfo {
                series_uid: uid,
                description: first.description.clone(),
                modality: first.modality.clone(),
                slices: slices.len(),
                rows: usize::from(first.rows),
                columns: usize::from(first.columns),
                transfer_syntax: first.transfer_syntax.clone(),
                files: distinct_files(&slices),
            };
            Some((info, slices))
        })
        .collect();
    out.sort_by(|a, b| {
        b.0.slices
            .cmp(&a.0.slices)
            .then_with(|| a.0.series_uid.cmp(&b.0.series_uid))
    });
    out
}

/// The files of a series' slices, each once (an enhanced object's frames share one).
fn distinct_files(slices: &[SliceHeader]) -> Vec<std::path::PathBuf> {
    let mut files: Vec<std::path::PathBuf> = slices.iter().map(|s| s.path.clone()).collect();
    files.dedup();
    files
}
