//! Format detection and format-independent reading and writing.

use std::io::Read;
use std::path::Path;

use crate::dicom::{self, DicomOptions};
use crate::error::{Error, ErrorKind, Result, WithPath};
use crate::image::AnyVolume;
use crate::{nifti, nrrd};

/// Formats Pinhole reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Nifti,
    Nrrd,
    DicomSeries,
    /// A DICOM Segmentation read as a label map ([`crate::dicom::seg_input`]).
    DicomSegmentation,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Self::Nifti => "NIfTI",
            Self::Nrrd => "NRRD",
            Self::DicomSeries => "DICOM series",
            Self::DicomSegmentation => "DICOM Segmentation",
        }
    }
}

/// Options for [`read_volume`].
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// DICOM: which series of a folder (default: the one with most slices).
    pub series_uid: Option<String>,
}

/// A volume read from disk, with what is worth telling the user about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub volume: AnyVolume,
    pub format: Format,
    pub warnings: Vec<String>,
    /// DICOM series instance UID, when read from DICOM.
    pub series_uid: Option<String>,
    /// DICOM `Modality` (0008,0060) of the series (`CT`, `MR`, `PT` …), when read from
    /// DICOM and present; NIfTI and NRRD do not record it.
    pub modality: Option<String>,
    /// The label names the file itself carries (a DICOM Segmentation's segments), which
    /// callers use unless given a table.
    pub label_table: Option<crate::labels::LabelTable>,
}

/// Recognises the format by content (a folder, or one DICOM file, is a DICOM series).
pub fn detect(path: &Path) -> Result<Format> {
    let meta = std::fs::metadata(path).with_path(path)?;
    if meta.is_dir() {
        return Ok(Format::DicomSeries);
    }
    let mut head = [0u8; 132];
    let mut file = std::fs::File::open(path).with_path(path)?;
    let n = read_up_to(&mut file, &mut head).with_path(path)?;
    let head = &head[..n];
    if n == 0 {
        return Err(Error::new(
            path,
            ErrorKind::NotMedicalImage("empty file".into()),
        ));
    }
    if head.starts_with(b"NRRD000") {
        return Ok(Format::Nrrd);
    }
    if head.starts_with(&[0x1f, 0x8b]) || nifti_sizeof_hdr(head) {
        return Ok(Format::Nifti);
    }
    if head.len() >= 132 && &head[128..132] == b"DICM" {
        // An enhanced multi-frame object holds a whole stack; `dicom::read_series`
        // refuses any other single file, pointing to the folder.
        return Ok(Format::DicomSeries);
    }
    Err(Error::new(
        path,
        ErrorKind::NotMedicalImage("not NIfTI, NRRD or a DICOM folder".into()),
    ))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn nifti_sizeof_hdr(head: &[u8]) -> bool {
    head.get(..4).is_some_and(|b| {
        let b = [b[0], b[1], b[2], b[3]];
        [348, 540].contains(&i32::from_le_bytes(b)) || [348, 540].contains(&i32::from_be_bytes(b))
    })
}

/// Reads a NIfTI or NRRD file, a DICOM series folder, an enhanced multi-frame file, or
/// a DICOM Segmentation (as a label map on its own grid, with its segments' table).
pub fn read_volume(
    path: &Path,
    options: &ReadOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Loaded> {
    let format = detect(path)?;
    if format == Format::DicomSeries && dicom::seg_input::is_segmentation_file(path) {
        let seg = dicom::seg_input::read_segmentation(path, None)?;
        return Ok(Loaded {
            volume: seg.labels.into(),
            format: Format::DicomSegmentation,
            warnings: seg.warnings,
            series_uid: None,
            modality: Some("SEG".into()),
            label_table: Some(seg.table),
        });
    }
    let (volume, warnings, series_uid, modality) = match format {
        Format::Nifti => (nifti::read(path)?, Vec::new(), None, None),
        Format::Nrrd => (nrrd::read(path)?, Vec::new(), None, None),
        Format::DicomSeries | Format::DicomSegmentation => {
            let dicom_options = DicomOptions {
                series_uid: options.series_uid.clone(),
            };
            let series = dicom::read_series(path, &dicom_options, progress)?;
            let modality =
                Some(series.info.modality.trim().to_ascii_uppercase()).filter(|m| !m.is_empty());
            (
                series.volume,
                series.warnings,
                Some(series.info.series_uid),
                modality,
            )
        }
    };
    Ok(Loaded {
        volume,
        format,
        warnings,
        series_uid,
        modality,
        label_table: None,
    })
}

/// Output formats, chosen by file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Nifti,
    NiftiGz,
    Nrrd,
}

/// The output format a file name asks for.
pub fn output_format(path: &Path) -> Result<OutputFormat> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.ends_with(".nii.gz") {
        Ok(OutputFormat::NiftiGz)
    } else if name.ends_with(".nii") {
        Ok(OutputFormat::Nifti)
    } else if name.ends_with(".nrrd") {
        Ok(OutputFormat::Nrrd)
    } else {
        Err(Error::new(
            path,
            ErrorKind::Unsupported("output name must end in .nii, .nii.gz or .nrrd".into()),
        ))
    }
}

/// Writes a volume as NIfTI (`.nii`, `.nii.gz`) or gzip NRRD (`.nrrd`).
pub fn write_volume(path: &Path, volume: &AnyVolume) -> Result<()> {
    match output_format(path)? {
        OutputFormat::Nifti | OutputFormat::NiftiGz => nifti::write(path, volume),
        OutputFormat::Nrrd => nrrd::write(
            path,
            volume,
            &nrrd::WriteOptions {
                gzip: true,
                key_values: Vec::new(),
            },
        ),
    }
}

/// Writes an RGB volume as gzip NRRD (`.nrrd`, an `RGB-color` axis that 3D Slicer shows
/// as a colour vector volume); NIfTI output is refused with the reason.
pub fn write_rgb_volume(path: &Path, volume: &dicom::RgbVolume) -> Result<()> {
    match output_format(path)? {
        OutputFormat::Nrrd => nrrd::write_rgb(
            path,
            volume,
            &nrrd::WriteOptions {
                gzip: true,
                key_values: Vec::new(),
            },
        ),
        OutputFormat::Nifti | OutputFormat::NiftiGz => Err(Error::new(
            path,
            ErrorKind::Unsupported(
                "a colour (RGB) series is written as .nrrd only (NIfTI RGB is not written)".into(),
            ),
        )),
    }
}
