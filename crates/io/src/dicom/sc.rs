//! DICOM Secondary Capture writer: one RGB picture (a plan, a fused view, a report
//! figure) as a Secondary Capture Image (PS3.3 A.8.1) in the patient and study of a CT
//! series. NOT FOR CLINICAL USE.
//!
//! * "NOT FOR CLINICAL USE" is burned into the pixels: a black band along the top with
//!   the words in the 5 × 7 font of [`pinhole_volume::annotate`], white with a black
//!   outline, centred, at the largest font scale (1 to 3) the width allows
//!   ([`burn_banner`]). Pictures that already carry it get it again unless
//!   [`ScOptions::banner_already_present`] says so. BurnedInAnnotation is YES either way.
//! * RGB, 8 bits, PlanarConfiguration 0 (pixel interleaved), Explicit VR Little Endian;
//!   ConversionType WSD; ImageType DERIVED\SECONDARY.
//! * Patient and study are copied from the source series as [`super::seg`] does (missing
//!   UIDs derived the same way, with a warning); SeriesDescription carries "NOT FOR
//!   CLINICAL USE". The SC IOD has no Frame of Reference: none is written.
//! * Refused ([`ErrorKind::InvalidInput`], nothing written): an empty picture, a pixel
//!   buffer of the wrong length, more than 65535 rows or columns, a picture too narrow or
//!   too low for the banner.

use std::path::{Path, PathBuf};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use pinhole_volume::annotate::Canvas;

pub use super::derived::NOT_FOR_CLINICAL_USE;
use super::derived::{
    copied_patient_study, dataset, general_equipment, general_series, int_string,
    read_header_object, read_source, rows_columns, short, sop_common, text, texts, us, utc_now,
    write_file, Element, Uids,
};
use crate::error::{Error, ErrorKind, Result};

/// Secondary Capture Image Storage SOP Class UID.
pub const SECONDARY_CAPTURE_STORAGE: &str = uids::SECONDARY_CAPTURE_IMAGE_STORAGE;

/// An 8-bit RGB picture, row 0 at the top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbPicture {
    pub width: usize,
    pub height: usize,
    /// Row-major `r g b` triples, `3 × width × height` bytes.
    pub rgb: Vec<u8>,
}

impl RgbPicture {
    pub fn new(width: usize, height: usize, rgb: Vec<u8>) -> Self {
        Self { width, height, rgb }
    }

    /// A PNG file as RGB (see [`crate::png::read_rgb8`]).
    pub fn from_png(path: &Path) -> Result<Self> {
        let (width, height, rgb) = crate::png::read_rgb8(path)?;
        Ok(Self::new(width as usize, height as usize, rgb))
    }
}

/// Where [`burn_banner`] put the notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Banner {
    /// Rows `0..rows` are the band (every other row is left as it was).
    pub rows: usize,
    /// Top-left of the text and its font scale, as [`Canvas::text`] takes them.
    pub text_x: usize,
    pub text_y: usize,
    pub scale: usize,
}

/// Series, equipment and picture attributes of the written instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScOptions {
    /// SeriesDescription; " NOT FOR CLINICAL USE" is appended when absent.
    pub series_description: String,
    pub series_number: i32,
    pub instance_number: i32,
    /// Modality of the new series ("OT": other).
    pub modality: String,
    /// The picture already shows "NOT FOR CLINICAL USE": write it as it is.
    pub banner_already_present: bool,
    pub manufacturer_model: String,
    pub software_version: String,
    pub device_serial_number: String,
}

impl Default for ScOptions {
    fn default() -> Self {
        Self {
            series_description: "Pinhole picture".into(),
            series_number: 1002,
            instance_number: 1,
            modality: "OT".into(),
            banner_already_present: false,
            manufacturer_model: "Pinhole".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            device_serial_number: "0".into(),
        }
    }
}

/// What [`write_secondary_capture`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScWritten {
    pub path: PathBuf,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    /// The burned-in notice; `None` when the caller said the picture carries it.
    pub banner: Option<Banner>,
    pub warnings: Vec<String>,
}

/// Writes `picture` as a Secondary Capture in the patient and study of the series made
/// of `source_files` to `out` (atomically), "NOT FOR CLINICAL USE" burned in at the top.
pub fn write_secondary_capture(
    source_files: &[PathBuf],
    picture: &RgbPicture,
    options: &ScOptions,
    out: &Path,
) -> Result<ScWritten> {
    let invalid = |m: String| Error::new(out, ErrorKind::InvalidInput(m));
    check_picture(picture).map_err(invalid)?;
    let mut pixels = picture.clone();
    let banner = if options.banner_already_present {
        None
    } else {
        Some(burn_banner(&mut pixels).map_err(invalid)?)
    };
    let source = read_source(source_files)?;
    let first = read_header_object(&source.slices[0].path)?;
    let mut warnings = source.warnings.clone();
    let uids = Uids::new(&source, &first, "SC", &mut warnings);
    let mut elements = sop_common(SECONDARY_CAPTURE_STORAGE, &uids);
    elements.extend(copied_patient_study(&first, &uids));
    elements.extend(general_series(
        &short(&options.modality, 16),
        &uids,
        options.series_number,
        &options.series_description,
    ));
    elements.extend(general_equipment(
        &options.manufacturer_model,
        &options.software_version,
        &options.device_serial_number,
    ));
    elements.extend(equipment_and_image(options));
    elements.extend(image_pixel(pixels));
    write_file(dataset(elements), out)?;
    Ok(ScWritten {
        path: out.to_path_buf(),
        sop_instance_uid: uids.instance,
        series_instance_uid: uids.series,
        banner,
        warnings,
    })
}

/// Not empty, `3 × width × height` bytes, at most 65535 rows and columns.
fn check_picture(picture: &RgbPicture) -> std::result::Result<(), String> {
    let (w, h) = (picture.width, picture.height);
    if w == 0 || h == 0 {
        return Err(format!("empty picture ({w} × {h})"));
    }
    if w > usize::from(u16::MAX) || h > usize::from(u16::MAX) {
        return Err(format!("{w} × {h} pixels: at most 65535 rows and columns"));
    }
    if picture.rgb.len() != w * h * 3 {
        return Err(format!(
            "{w} × {h} RGB needs {} bytes, got {}",
            w * h * 3,
            picture.rgb.len()
        ));
    }
    Ok(())
}

/// Burns "NOT FOR CLINICAL USE" into the top of `picture`: a black band, the words
/// centred in it at the largest font scale (1 to 3) that fits the width with 2 pixels to
/// spare on each side. Refused when the picture is too narrow for scale 1 or not higher
/// than the band.
pub fn burn_banner(picture: &mut RgbPicture) -> std::result::Result<Banner, String> {
    const SPARE: usize = 2;
    let (one_width, _) = Canvas::text_size(NOT_FOR_CLINICAL_USE, 1);
    let room = picture.width.saturating_sub(2 * SPARE);
    if room < one_width {
        return Err(format!(
            "picture {} pixels wide: the \"{NOT_FOR_CLINICAL_USE}\" banner needs {}",
            picture.width,
            one_width + 2 * SPARE
        ));
    }
    let scale = (room / one_width).clamp(1, 3);
    let (text_width, text_height) = Canvas::text_size(NOT_FOR_CLINICAL_USE, scale);
    let margin = 2 * scale;
    let rows = text_height + 2 * margin;
    if picture.height <= rows {
        return Err(format!(
            "picture {} pixels high: the \"{NOT_FOR_CLINICAL_USE}\" banner takes {rows} rows",
            picture.height
        ));
    }
    picture.rgb[..rows * picture.width * 3].fill(0);
    let banner = Banner {
        rows,
        text_x: (picture.width - text_width) / 2,
        text_y: margin,
        scale,
    };
    let mut canvas = Canvas {
        rgb: &mut picture.rgb,
        width: picture.width,
        height: picture.height,
    };
    canvas.text(
        banner.text_x as i64,
        banner.text_y as i64,
        NOT_FOR_CLINICAL_USE,
        scale,
    );
    Ok(banner)
}

/// SC Equipment, General Image and SC Image attributes.
fn equipment_and_image(options: &ScOptions) -> Vec<Element> {
    let (date, time) = utc_now();
    vec![
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        text(
            tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER,
            VR::LO,
            "Pinhole",
        ),
        text(
            tags::SECONDARY_CAPTURE_DEVICE_MANUFACTURER_MODEL_NAME,
            VR::LO,
            &short(&options.manufacturer_model, 64),
        ),
        texts(
            tags::SECONDARY_CAPTURE_DEVICE_SOFTWARE_VERSIONS,
            VR::LO,
            &[&short(&options.software_version, 64)],
        ),
        // "U": unpaired (dciodvfy asks for Laterality, type 2C, without it).
        text(tags::IMAGE_LATERALITY, VR::CS, "U"),
        int_string(tags::INSTANCE_NUMBER, i64::from(options.instance_number)),
        text(tags::PATIENT_ORIENTATION, VR::CS, ""),
        texts(tags::IMAGE_TYPE, VR::CS, &["DERIVED", "SECONDARY"]),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
        text(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        text(tags::DATE_OF_SECONDARY_CAPTURE, VR::DA, &date),
        text(tags::TIME_OF_SECONDARY_CAPTURE, VR::TM, &time),
    ]
}

/// Image Pixel: RGB, 8 bits, pixel interleaved; PixelData padded to even length.
fn image_pixel(picture: RgbPicture) -> Vec<Element> {
    let mut data = picture.rgb;
    if data.len() % 2 == 1 {
        data.push(0);
    }
    let mut elements = vec![
        us(tags::SAMPLES_PER_PIXEL, &[3]),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
        us(tags::PLANAR_CONFIGURATION, &[0]),
        us(tags::BITS_ALLOCATED, &[8]),
        us(tags::BITS_STORED, &[8]),
        us(tags::HIGH_BIT, &[7]),
        us(tags::PIXEL_REPRESENTATION, &[0]),
        DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(data)),
    ];
    elements.extend(rows_columns(picture.height, picture.width));
    elements
}

#[cfg(test)]
mod tests {
    use dicom_object::InMemDicomObject;

    use super::*;

    fn grey(width: usize, height: usize) -> RgbPicture {
        RgbPicture::new(width, height, vec![128; width * height * 3])
    }

    #[test]
    fn the_banner_is_readable_and_touches_only_its_band() {
        for width in [123, 250, 400, 1000] {
            let mut picture = grey(width, 80);
            let banner = burn_banner(&mut picture).unwrap();
            let canvas = Canvas {
                rgb: &mut picture.rgb,
                width,
                height: 80,
            };
            assert!(
                canvas.shows_text(
                    banner.text_x,
                    banner.text_y,
                    NOT_FOR_CLINICAL_USE,
                    banner.scale
                ),
                "{width}: {banner:?}"
            );
            assert!(picture.rgb[banner.rows * width * 3..]
                .iter()
                .all(|v| *v == 128));
        }
        assert_eq!(burn_banner(&mut grey(400, 80)).unwrap().scale, 3);
        assert_eq!(burn_banner(&mut grey(250, 80)).unwrap().scale, 2);
        assert!(burn_banner(&mut grey(122, 80)).is_err());
        assert!(burn_banner(&mut grey(400, 30)).is_err());
    }

    #[test]
    fn odd_pixel_data_is_padded() {
        let obj =
            InMemDicomObject::from_element_iter(image_pixel(RgbPicture::new(3, 1, vec![1; 9])));
        let data = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(data.len(), 10);
        assert!(check_picture(&RgbPicture::new(3, 1, vec![1; 8])).is_err());
        assert!(check_picture(&RgbPicture::new(0, 1, Vec::new())).is_err());
    }
}
