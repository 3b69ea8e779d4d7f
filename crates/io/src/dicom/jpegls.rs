//! JPEG-LS decoding (ITU-T T.87 | ISO/IEC 14495-1), lossless and near-lossless, of one
//! greyscale component or three colour components: the pixel data of transfer syntaxes 1.2.840.10008.1.2.4.80
//! (lossless) and .81 (near-lossless), common PACS compression.
//!
//! Written from the standard: LOCO-I prediction with the edge-detecting predictor,
//! 365 regular contexts and two run-interruption contexts, limited-length Golomb codes,
//! run mode with the J table, bias cancellation, modular reduction for near-lossless,
//! default thresholds (C.2.4.1.1) or those of an LSE preset-parameters segment, and
//! the marker-stuffed bit stream (a 0 bit after every 0xFF byte).
//!
//! Colour (three components, T.87 Annex B): one scan per component (ILV 0), lines
//! interleaved (ILV 1: the contexts shared, a run index per component) or samples
//! interleaved (ILV 2: a run only where every component's gradients are flat, its
//! interruption coded per component in the first run-interruption context), as
//! CharLS codes them.
//!
//! Refused with a reason: two or four components, a colour transform (HP1–3 in an
//! APP8 "mrfx" segment), restart intervals, mapping
//! tables (LSE 2 / 3) and oversize-dimension segments (LSE 4), a point transform, a
//! sample precision outside 2–16 bits, a height left to a DNL marker, an image larger
//! than the caller's limit, and any code the standard cannot produce.
//!
//! Guarantees: any bytes give an image or an error, never a panic; nothing is allocated
//! before the frame header's size has passed the caller's limit; every decoded sample
//! lies in `0..=MAXVAL`.

/// JPEG-LS transfer syntaxes (PS3.5 A.4.3): lossless, near-lossless.
pub const TRANSFER_SYNTAXES: [&str; 2] = ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"];

/// A decoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegLsImage {
    pub columns: usize,
    pub rows: usize,
    /// 1 (greyscale) or 3 (colour).
    pub components: usize,
    /// Sample precision P of the frame header, bits.
    pub precision_bits: u8,
    /// NEAR of the scan: 0 lossless, otherwise each sample within ±NEAR of the original.
    pub near: u16,
    /// Row-major samples, `columns * rows * components` of them, a pixel's components
    /// together (`R G B R G B …`).
    pub samples: Vec<u16>,
}

/// Decodes one JPEG-LS codestream (SOI … EOI) whose `columns * rows * components` is at
/// most `max_samples`.
pub fn decode(codestream: &[u8], max_samples: usize) -> Result<JpegLsImage, String> {
    let mut header = parse_header(codestream, max_samples)?;
    let data = codestream.get(header.scan_start..).unwrap_or_default();
    let samples = match (header.components, header.scan_components, header.interleave) {
        (1, 1, _) => ScanDecoder::new(&header)?.decode(data)?,
        (3, 3, 1) => ScanDecoder::new(&header)?.decode_line_interleaved(data, 3)?,
        (3, 3, 2) => ScanDecoder::new(&header)?.decode_sample_interleaved(data)?,
        (3, 1, 0) => decode_scan_per_component(codestream, &mut header)?,
        (components, scan, interleave) => {
            return Err(format!(
                "JPEG-LS scan of {scan} of {components} components with interleave mode \
                 {interleave}"
            ))
        }
    };
    Ok(JpegLsImage {
        columns: header.columns,
        rows: header.rows,
        components: header.components,
        precision_bits: header.precision_bits,
        near: header.near as u16,
        samples,
    })
}

/// ILV 0: each component in a scan of its own (its own contexts and NEAR), in any
/// order; the planes are interleaved into pixels.
fn decode_scan_per_component(codestream: &[u8], header: &mut Header) -> Result<Vec<u16>, String> {
    let pixels = header.columns * header.rows;
    let mut samples = vec![0u16; 3 * pixels];
    let mut decoded = [false; 3];
    loop {
        let component = header
            .component_ids
            .iter()
            .position(|&id| id == header.scan_component_id)
            .ok_or("JPEG-LS scan of a component the frame does not have")?;
        if std::mem::replace(&mut decoded[component], true) {
            return Err("JPEG-LS component coded twice".into());
        }
        let data = codestream.get(header.scan_start..).unwrap_or_default();
        let plane = ScanDecoder::new(header)?.decode(data)?;
        for (pixel, &value) in plane.iter().enumerate() {
            samples[3 * pixel + component] = value;
        }
        if decoded.iter().all(|&d| d) {
            return Ok(samples);
        }
        let next = next_marker(codestream, header.scan_start)
            .ok_or("JPEG-LS codestream ends before its last component's scan")?;
        walk_to_scan(codestream, next, header)?;
        if header.scan_components != 1 {
            return Err("JPEG-LS scans of one component and of several mixed".into());
        }
    }
}

/// The first marker (0xFF then a byte ≥ 0x80) at or after `from`: the end of an
/// entropy-coded segment, where an 0xFF is otherwise followed by a stuffed 0 bit.
fn next_marker(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(1)).find(|&at| bytes[at] == 0xFF && bytes[at + 1] >= 0x80)
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOF55: u8 = 0xF7;
const LSE: u8 = 0xF8;
const SOS: u8 = 0xDA;
const DRI: u8 = 0xDD;
const COM: u8 = 0xFE;
const APP8: u8 = 0xE8;

/// What the marker segments before the entropy-coded data say.
#[derive(Debug, Default)]
struct Header {
    columns: usize,
    rows: usize,
    precision_bits: u8,
    components: usize,
    component_ids: Vec<u8>,
    /// Components in the current scan, and the first one's identifier.
    scan_components: usize,
    scan_component_id: u8,
    /// ILV of the current scan: 0 none, 1 line, 2 sample.
    interleave: u8,
    max_samples: usize,
    near: i64,
    /// LSE preset parameters: MAXVAL, T1, T2, T3, RESET (0 = default).
    preset: [i64; 5],
    scan_start: usize,
}

fn be_u16(data: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes(data.get(at..at + 2)?.try_into().ok()?).into())
}

/// Walks the marker segments up to the start of the scan's entropy-coded data.
fn parse_header(bytes: &[u8], max_samples: usize) -> Result<Header, String> {
    if bytes.get(..2) != Some(&[0xFF, SOI][..]) {
        return Err("JPEG-LS pixel data does not start with an SOI marker".into());
    }
    let mut header = Header {
        max_samples,
        ..Header::default()
    };
    walk_to_scan(bytes, 2, &mut header)?;
    Ok(header)
}

/// Walks marker segments from `at` to the next scan's entropy-coded data (setting
/// `header.scan_start`); the frame header must come before the first scan, once.
fn walk_to_scan(bytes: &[u8], mut at: usize, header: &mut Header) -> Result<(), String> {
    let mut frame_seen = header.components > 0;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let marker = match bytes.get(at..at + 2) {
            Some([0xFF, m]) => *m,
            Some(_) => return Err(format!("JPEG-LS: expected a marker at byte {at}")),
            None => return Err("JPEG-LS codestream ends before its scan".into()),
        };
        let length =
            be_u16(bytes, at + 2).ok_or("JPEG-LS codestream ends inside a marker segment")?;
        let segment = bytes
            .get(at + 4..at + 2 + length)
            .filter(|_| length >= 2)
            .ok_or_else(|| format!("JPEG-LS marker FF{marker:02X} claims {length} bytes"))?;
        match marker {
            SOF55 if !frame_seen => {
                read_frame_header(segment, header)?;
                frame_seen = true;
            }
            SOF55 => return Err("JPEG-LS codestream with a second frame header".into()),
            LSE => read_preset_parameters(segment, header)?,
            APP8 if segment.starts_with(b"mrfx") && segment.get(4).is_some_and(|&t| t != 0) => {
                return Err(format!(
                    "JPEG-LS colour transform HP{} (APP8 mrfx) is not supported",
                    segment[4]
                ))
            }
            DRI => {
                if segment.iter().any(|&b| b != 0) {
                    return Err("JPEG-LS restart intervals are not supported".into());
                }
            }
            SOS => {
                if !frame_seen {
                    return Err("JPEG-LS scan before its frame header (SOF55)".into());
                }
                read_scan_header(segment, header)?;
                header.scan_start = at + 2 + length;
                return Ok(());
            }
            0xE0..=0xEF | COM => {}
            0xC0..=0xCF => {
                return Err(format!(
                    "not a JPEG-LS codestream: frame marker FF{marker:02X} (other JPEG process)"
                ))
            }
            EOI => return Err("JPEG-LS codestream ends before its scan".into()),
            other => return Err(format!("unexpected JPEG-LS marker FF{other:02X}")),
        }
        at += 2 + length;
    }
}

fn read_frame_header(segment: &[u8], h: &mut Header) -> Result<(), String> {
    let truncated = || "truncated JPEG-LS frame header".to_string();
    let precision = *segment.first().ok_or_else(truncated)?;
    let rows = be_u16(segment, 1).ok_or_else(truncated)?;
    let columns = be_u16(segment, 3).ok_or_else(truncated)?;
    let components = usize::from(*segment.get(5).ok_or_else(truncated)?);
    if components != 1 && components != 3 {
        return Err(format!(
            "JPEG-LS with {components} components (one or three are read)"
        ));
    }
    // Ci, Hi/Vi, Tqi per component.
    let ids: Vec<u8> = (0..components)
        .map(|c| segment.get(6 + 3 * c).copied().ok_or_else(truncated))
        .collect::<Result<_, _>>()?;
    if !(2..=16).contains(&precision) {
        return Err(format!("JPEG-LS sample precision of {precision} bits"));
    }
    if rows == 0 {
        return Err("JPEG-LS frames whose height follows in a DNL marker are not supported".into());
    }
    if columns == 0 || rows * columns * components > h.max_samples {
        return Err(format!(
            "JPEG-LS frame of {columns}x{rows} samples of {components} components does not \
             match the header (at most {} samples)",
            h.max_samples
        ));
    }
    h.precision_bits = precision;
    h.rows = rows;
    h.columns = columns;
    h.components = components;
    h.component_ids = ids;
    Ok(())
}

fn read_preset_parameters(segment: &[u8], h: &mut Header) -> Result<(), String> {
    match segment.first() {
        Some(1) => {
            for (i, value) in h.preset.iter_mut().enumerate() {
                *value =
                    be_u16(segment, 1 + 2 * i).ok_or("truncated JPEG-LS preset parameters")? as i64;
            }
            Ok(())
        }
        Some(2 | 3) => Err("JPEG-LS mapping tables are not supported".into()),
        Some(id) => Err(format!("JPEG-LS LSE segment of type {id} is not supported")),
        None => Err("empty JPEG-LS LSE segment".into()),
    }
}

fn read_scan_header(segment: &[u8], h: &mut Header) -> Result<(), String> {
    // Ns, (Ci, Tmi) × Ns, NEAR, ILV, point transform.
    let truncated = || "truncated JPEG-LS scan header".to_string();
    let components = usize::from(*segment.first().ok_or_else(truncated)?);
    if segment.len() != 4 + 2 * components {
        return Err(format!(
            "JPEG-LS scan header of {} bytes for {components} components",
            segment.len()
        ));
    }
    if components != 1 && components != h.components {
        return Err(format!(
            "JPEG-LS scan of {components} of the frame's {} components",
            h.components
        ));
    }
    if (0..components).any(|c| segment[2 + 2 * c] != 0) {
        return Err("JPEG-LS mapping tables are not supported".into());
    }
    let [near, interleave, point_transform] = segment[1 + 2 * components..] else {
        return Err(truncated());
    };
    if point_transform != 0 {
        return Err("JPEG-LS point transform is not supported".into());
    }
    if components > 1 && !matches!(interleave, 1 | 2) {
        return Err(format!(
            "JPEG-LS scan of {components} components with interleave mode {interleave}"
        ));
    }
    h.scan_components = components;
    h.scan_component_id = segment[1];
    h.interleave = if components == 1 { 0 } else { interleave };
    h.near = i64::from(near);
    Ok(())
}

/// The J table of run lengths (A.7.1.1).
const J: [u32; 32] = [
    0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13,
    14, 15,
];
const REGULAR_CONTEXTS: usize = 365;
const MIN_C: i64 = -128;
const MAX_C: i64 = 127;

/// Coding parameters and context state of one scan.
struct ScanDecoder {
    columns: usize,
    rows: usize,
    near: i64,
    max_value: i64,
    range: i64,
    qbpp: u32,
    limit: u32,
    thresholds: [i64; 3],
    reset: i64,
    /// Q(gradient) for gradients −MAXVAL..=MAXVAL (index gradient + MAXVAL); empty for
    /// images smaller than the table (`quantize` then).
    quantization: Vec<i8>,
    /// A, B, C, N of the 365 regular contexts and the two run-interruption contexts.
    a: [i64; REGULAR_CONTEXTS + 2],
    b: [i64; REGULAR_CONTEXTS + 2],
    c: [i64; REGULAR_CONTEXTS + 2],
    n: [i64; REGULAR_CONTEXTS + 2],
    nn: [i64; 2],
    run_index: usize,
}

fn ceil_log2(value: i64) -> u32 {
    let mut bits = 0;
    while (1i64 << bits) < value {
        bits += 1;
    }
    bits
}

/// CLAMP of C.2.4.1.1.1.
fn clamp_threshold(value: i64, low: i64, max_value: i64) -> i64 {
    if value > max_value || value < low {
        low
    } else {
        value
    }
}

/// BASIC_T1..3 of C.2.4.1.1.1 (the 8-bit thresholds).
const BASIC_T1: i64 = 3;
const BASIC_T2: i64 = 7;
const BASIC_T3: i64 = 21;

/// The default thresholds T1, T2, T3 (C.2.4.1.1.1).
fn default_thresholds(max_value: i64, near: i64) -> [i64; 3] {
    let (t1, t2, t3) = if max_value >= 128 {
        let factor = (max_value.min(4095) + 128) >> 8;
        let t1 = clamp_threshold(factor * (BASIC_T1 - 2) + 2 + 3 * near, near + 1, max_value);
        let t2 = clamp_threshold(factor * (BASIC_T2 - 3) + 3 + 5 * near, t1, max_value);
        let t3 = clamp_threshold(factor * (BASIC_T3 - 4) + 4 + 7 * near, t2, max_value);
        (t1, t2, t3)
    } else {
        let factor = 256 / (max_value + 1);
        let t1 = clamp_threshold((BASIC_T1 / factor + 3 * near).max(2), near + 1, max_value);
        let t2 = clamp_threshold((BASIC_T2 / factor + 5 * near).max(3), t1, max_value);
        let t3 = clamp_threshold((BASIC_T3 / factor + 7 * near).max(4), t2, max_value);
        (t1, t2, t3)
    };
    [t1, t2, t3]
}

impl ScanDecoder {
    fn new(h: &Header) -> Result<Self, String> {
        let [max_value, t1, t2, t3, reset] = h.preset;
        let full_scale = (1i64 << h.precision_bits) - 1;
        let max_value = if max_value == 0 {
            full_scale
        } else {
            max_value
        };
        if max_value > full_scale {
            return Err(format!(
                "JPEG-LS MAXVAL {max_value} exceeds {} bits",
                h.precision_bits
            ));
        }
        let near = h.near;
        if near > (max_value / 2).min(255) {
            return Err(format!("JPEG-LS NEAR {near} with MAXVAL {max_value}"));
        }
        let defaults = default_thresholds(max_value, near);
        let thresholds = [
            if t1 == 0 { defaults[0] } else { t1 },
            if t2 == 0 { defaults[1] } else { t2 },
            if t3 == 0 { defaults[2] } else { t3 },
        ];
        if !(near < thresholds[0]
            && thresholds[0] <= thresholds[1]
            && thresholds[1] <= thresholds[2]
            && thresholds[2] <= max_value)
        {
            return Err(format!(
                "JPEG-LS thresholds {thresholds:?} are out of order"
            ));
        }
        let reset = if reset == 0 { 64 } else { reset };
        if reset < 3 || reset > max_value.max(255) {
            return Err(format!("JPEG-LS RESET {reset}"));
        }
        let range = (max_value + 2 * near) / (2 * near + 1) + 1;
        let bpp = ceil_log2(max_value + 1).max(2);
        let initial_a = ((range + 32) / 64).max(2);
        let mut decoder = Self {
            columns: h.columns,
            rows: h.rows,
            near,
            max_value,
            range,
            qbpp: ceil_log2(range),
            limit: 2 * (bpp + bpp.max(8)),
            thresholds,
            reset,
            quantization: Vec::new(),
            a: [initial_a; REGULAR_CONTEXTS + 2],
            b: [0; REGULAR_CONTEXTS + 2],
            c: [0; REGULAR_CONTEXTS + 2],
            n: [1; REGULAR_CONTEXTS + 2],
            nn: [0; 2],
            run_index: 0,
        };
        // The table pays off once the image has more samples than it has entries.
        if 2 * max_value < (h.rows * h.columns) as i64 {
            decoder.quantization = (-max_value..=max_value)
                .map(|g| decoder.quantize(g) as i8)
                .collect();
        }
        Ok(decoder)
    }

    /// Decodes every line; each line is held with one extra sample on either side
    /// (index 0: the left neighbour of the first sample, `columns + 1`: the upper-right
    /// neighbour of the last).
    fn decode(mut self, data: &[u8]) -> Result<Vec<u16>, String> {
        let width = self.columns;
        let mut bits = BitReader::new(data);
        let mut samples = Vec::with_capacity(width * self.rows);
        let mut previous = vec![0i64; width + 2];
        let mut current = vec![0i64; width + 2];
        for _ in 0..self.rows {
            self.decode_line(&mut bits, &mut current, &mut previous)?;
            samples.extend(current[1..=width].iter().map(|&v| v as u16));
            std::mem::swap(&mut previous, &mut current);
        }
        Ok(samples)
    }

    /// ILV 1: each row holds a line of every component in turn; the contexts are shared
    /// and each component keeps its own run index (as CharLS codes them).
    fn decode_line_interleaved(
        mut self,
        data: &[u8],
        components: usize,
    ) -> Result<Vec<u16>, String> {
        let width = self.columns;
        let mut bits = BitReader::new(data);
        let mut samples = vec![0u16; width * self.rows * components];
        let mut previous = vec![vec![0i64; width + 2]; components];
        let mut current = vec![vec![0i64; width + 2]; components];
        let mut run_index = vec![0usize; components];
        for y in 0..self.rows {
            for c in 0..components {
                self.run_index = run_index[c];
                self.decode_line(&mut bits, &mut current[c], &mut previous[c])?;
                run_index[c] = self.run_index;
                let row = &mut samples[y * width * components..(y + 1) * width * components];
                for (x, &value) in current[c][1..=width].iter().enumerate() {
                    row[x * components + c] = value as u16;
                }
                std::mem::swap(&mut previous[c], &mut current[c]);
            }
        }
        Ok(samples)
    }

    /// ILV 2: the three samples of a pixel in turn, each in its own component's context;
    /// run mode where all three components are flat, over whole pixels.
    fn decode_sample_interleaved(mut self, data: &[u8]) -> Result<Vec<u16>, String> {
        let width = self.columns;
        let mut bits = BitReader::new(data);
        let mut samples = Vec::with_capacity(3 * width * self.rows);
        let mut previous = [(); 3].map(|_| vec![0i64; width + 2]);
        let mut current = [(); 3].map(|_| vec![0i64; width + 2]);
        for _ in 0..self.rows {
            for c in 0..3 {
                previous[c][width + 1] = previous[c][width];
                current[c][0] = previous[c][1];
            }
            let mut x = 1;
            while x <= width {
                let neighbours = [0, 1, 2].map(|c| {
                    (
                        current[c][x - 1],
                        previous[c][x],
                        previous[c][x - 1],
                        previous[c][x + 1],
                    )
                });
                let contexts = neighbours.map(|(a, b, cc, d)| {
                    81 * self.quantized(d - b) + 9 * self.quantized(b - cc) + self.quantized(cc - a)
                });
                if contexts == [0; 3] {
                    x = self.run_pixels(&mut bits, &mut current, &previous, x)?;
                } else {
                    for c in 0..3 {
                        let (a, b, cc, _) = neighbours[c];
                        current[c][x] = self.regular(&mut bits, a, b, cc, contexts[c])?;
                    }
                    x += 1;
                }
            }
            for x in 1..=width {
                samples.extend(current.iter().map(|line| line[x] as u16));
            }
            std::mem::swap(&mut previous, &mut current);
        }
        Ok(samples)
    }

    /// Run mode over whole pixels from column `x` (ILV 2): the run value is the pixel on
    /// the left; an interruption codes each component against the pixel above.
    fn run_pixels(
        &mut self,
        bits: &mut BitReader,
        current: &mut [Vec<i64>; 3],
        previous: &[Vec<i64>; 3],
        x: usize,
    ) -> Result<usize, String> {
        let run_value = [0, 1, 2].map(|c| current[c][x - 1]);
        let (length, interrupted) = self.read_run(bits, x)?;
        for c in 0..3 {
            current[c][x..x + length].fill(run_value[c]);
        }
        let x = x + length;
        if !interrupted {
            return Ok(x);
        }
        for c in 0..3 {
            let (a, b) = (run_value[c], previous[c][x]);
            let sign = if b - a < 0 { -1 } else { 1 };
            current[c][x] = self.interruption_sample(bits, false, b, sign)?;
        }
        self.run_index = self.run_index.saturating_sub(1);
        Ok(x + 1)
    }

    /// Reads one run from column `x` (A.7.1): the samples it covers, and whether an
    /// interruption sample follows (else the run reached the end of the line).
    fn read_run(&mut self, bits: &mut BitReader, x: usize) -> Result<(usize, bool), String> {
        let left = self.columns + 1 - x;
        let mut length = 0;
        while length < left {
            let segment = 1usize << J[self.run_index];
            if bits.read(1)? == 1 {
                let filled = segment.min(left - length);
                length += filled;
                if filled == segment && self.run_index < 31 {
                    self.run_index += 1;
                }
            } else {
                let count = bits.read(J[self.run_index])? as usize;
                if count >= left - length {
                    return Err("corrupt JPEG-LS data (run beyond the line)".into());
                }
                return Ok((length + count, true));
            }
        }
        Ok((length, false))
    }

    /// One line of one component into `current[1..=columns]`; `previous` is the line
    /// above (its edge sample set here).
    fn decode_line(
        &mut self,
        bits: &mut BitReader,
        current: &mut [i64],
        previous: &mut [i64],
    ) -> Result<(), String> {
        let width = self.columns;
        previous[width + 1] = previous[width];
        current[0] = previous[1];
        let mut x = 1;
        while x <= width {
            let (a, b, c, d) = (
                current[x - 1],
                previous[x],
                previous[x - 1],
                previous[x + 1],
            );
            // 81·Q1 + 9·Q2 + Q3 has the sign of the first non-zero Qi (|9·Q2 + Q3| ≤
            // 40 < 81): folding the sign (A.3.4) is taking its absolute value, and
            // the windows 81·Q1 ± 40 are disjoint, one index in 0..365 per context.
            // It is 0 exactly when every gradient is within ±NEAR: run mode (A.3.1).
            let signed_context =
                81 * self.quantized(d - b) + 9 * self.quantized(b - c) + self.quantized(c - a);
            if signed_context == 0 {
                x = self.run(bits, current, previous, x)?;
            } else {
                current[x] = self.regular(bits, a, b, c, signed_context)?;
                x += 1;
            }
        }
        Ok(())
    }

    /// The quantised gradient from the table (gradients of reconstructed samples lie in
    /// ±MAXVAL).
    fn quantized(&self, gradient: i64) -> i64 {
        if self.quantization.is_empty() {
            return self.quantize(gradient);
        }
        let index = (gradient + self.max_value) as usize;
        i64::from(self.quantization.get(index).copied().unwrap_or(0))
    }

    fn quantize(&self, gradient: i64) -> i64 {
        let [t1, t2, t3] = self.thresholds;
        let near = self.near;
        match gradient {
            g if g <= -t3 => -4,
            g if g <= -t2 => -3,
            g if g <= -t1 => -2,
            g if g < -near => -1,
            g if g <= near => 0,
            g if g < t1 => 1,
            g if g < t2 => 2,
            g if g < t3 => 3,
            _ => 4,
        }
    }

    /// One sample in regular mode (A.3 – A.6) in the context `signed_context` (non-zero).
    fn regular(
        &mut self,
        bits: &mut BitReader,
        a: i64,
        b: i64,
        c: i64,
        signed_context: i64,
    ) -> Result<i64, String> {
        let sign = if signed_context < 0 { -1 } else { 1 };
        let context = signed_context.unsigned_abs() as usize;
        let predicted = if c >= a.max(b) {
            a.min(b)
        } else if c <= a.min(b) {
            a.max(b)
        } else {
            a + b - c
        };
        let predicted = (predicted + sign * self.c[context]).clamp(0, self.max_value);
        let k = golomb_parameter(self.n[context], self.a[context]);
        let mapped = self.read_golomb(bits, k, self.limit)?;
        let error = if self.near == 0 && k == 0 && 2 * self.b[context] <= -self.n[context] {
            if mapped & 1 == 1 {
                (mapped - 1) / 2
            } else {
                -(mapped / 2) - 1
            }
        } else if mapped & 1 == 0 {
            mapped / 2
        } else {
            -(mapped + 1) / 2
        };
        self.check_error(error)?;
        self.update_regular(context, error);
        Ok(self.reconstruct(predicted, sign * error))
    }

    fn update_regular(&mut self, q: usize, error: i64) {
        self.b[q] += error * (2 * self.near + 1);
        self.a[q] += error.abs();
        if self.n[q] == self.reset {
            self.a[q] >>= 1;
            self.b[q] = if self.b[q] >= 0 {
                self.b[q] >> 1
            } else {
                -((1 - self.b[q]) >> 1)
            };
            self.n[q] >>= 1;
        }
        self.n[q] += 1;
        if self.b[q] <= -self.n[q] {
            self.b[q] += self.n[q];
            if self.c[q] > MIN_C {
                self.c[q] -= 1;
            }
            if self.b[q] <= -self.n[q] {
                self.b[q] = -self.n[q] + 1;
            }
        } else if self.b[q] > 0 {
            self.b[q] -= self.n[q];
            if self.c[q] < MAX_C {
                self.c[q] += 1;
            }
            if self.b[q] > 0 {
                self.b[q] = 0;
            }
        }
    }

    /// A valid stream's error, after modular reduction, lies within half the range.
    fn check_error(&self, error: i64) -> Result<(), String> {
        if error.abs() > self.range {
            return Err("corrupt JPEG-LS data (prediction error beyond the range)".into());
        }
        Ok(())
    }

    /// The sample from its prediction and its signed, quantised error (A.4.5, with the
    /// modular reduction undone and the result clamped).
    fn reconstruct(&self, predicted: i64, signed_error: i64) -> i64 {
        let step = 2 * self.near + 1;
        let mut value = predicted + signed_error * step;
        if value < -self.near {
            value += self.range * step;
        } else if value > self.max_value + self.near {
            value -= self.range * step;
        }
        value.clamp(0, self.max_value)
    }

    /// A limited-length Golomb code (A.5.3): the unary prefix, then `k` bits, or after
    /// the escape prefix `qbpp` bits of the value minus one.
    #[inline]
    fn read_golomb(&self, bits: &mut BitReader, k: u32, limit: u32) -> Result<i64, String> {
        let escape = limit.saturating_sub(self.qbpp + 1);
        // Fast path: the prefix, its 1 bit and the k low bits are all in the buffer.
        if bits.available < 32 {
            bits.fill();
        }
        let prefix = bits.buffer.leading_zeros();
        if prefix < escape && prefix + 1 + k <= bits.available {
            let after_one = bits.buffer << prefix << 1;
            let low = if k == 0 { 0 } else { after_one >> (64 - k) };
            bits.consume(prefix + 1 + k);
            return Ok((i64::from(prefix) << k) | low as i64);
        }
        let prefix = bits.count_zeros(escape)?;
        if prefix < escape {
            Ok((i64::from(prefix) << k) | i64::from(bits.read(k)?))
        } else {
            Ok(i64::from(bits.read(self.qbpp)?) + 1)
        }
    }

    /// Run mode from column `x` (A.7): returns the column after the run and its
    /// interruption sample, if any.
    fn run(
        &mut self,
        bits: &mut BitReader,
        current: &mut [i64],
        previous: &[i64],
        x: usize,
    ) -> Result<usize, String> {
        let run_value = current[x - 1];
        let (length, interrupted) = self.read_run(bits, x)?;
        current[x..x + length].fill(run_value);
        let x = x + length;
        if !interrupted {
            return Ok(x);
        }
        current[x] = self.run_interruption(bits, run_value, previous[x])?;
        self.run_index = self.run_index.saturating_sub(1);
        Ok(x + 1)
    }

    /// The sample that ended a run (A.7.2).
    fn run_interruption(&mut self, bits: &mut BitReader, a: i64, b: i64) -> Result<i64, String> {
        let same = (a - b).abs() <= self.near;
        let (predicted, sign) = match (same, a > b) {
            (true, _) => (a, 1),
            (false, true) => (b, -1),
            (false, false) => (b, 1),
        };
        self.interruption_sample(bits, same, predicted, sign)
    }

    /// A run-interruption sample coded in context RItype `same` (A.7.2.2 – A.7.2.4).
    fn interruption_sample(
        &mut self,
        bits: &mut BitReader,
        same: bool,
        predicted: i64,
        sign: i64,
    ) -> Result<i64, String> {
        let ri_type = i64::from(same);
        let q = REGULAR_CONTEXTS + usize::from(same);
        let temp = if same {
            self.a[q] + (self.n[q] >> 1)
        } else {
            self.a[q]
        };
        let k = golomb_parameter(self.n[q], temp);
        let limit = self.limit - J[self.run_index] - 1;
        let mapped = self.read_golomb(bits, k, limit)?;
        let t = mapped + ri_type;
        let odd = t & 1 == 1;
        let magnitude = (t + i64::from(odd)) / 2;
        let nn = self.nn[usize::from(same)];
        let error = if (k != 0 || 2 * nn >= self.n[q]) == odd {
            -magnitude
        } else {
            magnitude
        };
        self.check_error(error)?;
        if error < 0 {
            self.nn[usize::from(same)] += 1;
        }
        self.a[q] += (mapped + 1 - ri_type) >> 1;
        if self.n[q] == self.reset {
            self.a[q] >>= 1;
            self.n[q] >>= 1;
            self.nn[usize::from(same)] >>= 1;
        }
        self.n[q] += 1;
        Ok(self.reconstruct(predicted, sign * error))
    }
}

/// The Golomb parameter k: the least k with N·2^k ≥ A (N ≥ 1). With `bits(x)` the bit
/// length, N·2^(bits(A) − bits(N)) has A's bit length: k is that or one more.
fn golomb_parameter(n: i64, a: i64) -> u32 {
    if a <= n {
        return 0;
    }
    let bits = |x: i64| 64 - x.leading_zeros();
    let k = bits(a) - bits(n);
    if (n << k) >= a {
        k
    } else {
        k + 1
    }
}

/// Reads the entropy-coded segment: after a 0xFF byte only 7 bits of the next byte are
/// data; an 0xFF followed by a byte ≥ 0x80 is the marker that ends the segment.
struct BitReader<'a> {
    data: &'a [u8],
    at: usize,
    /// Left-aligned bits not yet consumed.
    buffer: u64,
    available: u32,
    after_ff: bool,
}

impl<'a> BitReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            at: 0,
            buffer: 0,
            available: 0,
            after_ff: false,
        }
    }

    fn fill(&mut self) {
        self.fill_plain_bytes();
        while self.available <= 56 {
            let Some(&byte) = self.data.get(self.at) else {
                return;
            };
            let (value, width) = if self.after_ff {
                if byte & 0x80 != 0 {
                    return; // a marker
                }
                (byte, 7)
            } else {
                if byte == 0xFF && self.data.get(self.at + 1).is_some_and(|&n| n & 0x80 != 0) {
                    return; // a marker
                }
                (byte, 8)
            };
            self.after_ff = byte == 0xFF && width == 8;
            self.buffer |= u64::from(value) << (64 - self.available - width);
            self.available += width;
            self.at += 1;
        }
    }

    /// Takes as many of the next bytes as fit at once, up to the first 0xFF (which the
    /// byte-wise loop handles).
    fn fill_plain_bytes(&mut self) {
        if self.after_ff || self.available > 56 {
            return;
        }
        let Some(Ok(chunk)) = self.data.get(self.at..self.at + 8).map(<[u8; 8]>::try_from) else {
            return;
        };
        let word = u64::from_be_bytes(chunk);
        // High bit of each byte of `word` that is 0xFF (a zero byte of !word); a false
        // positive can only precede a true one, so stopping at it is merely early.
        let inverted = !word;
        let ff = inverted.wrapping_sub(0x0101_0101_0101_0101) & !inverted & 0x8080_8080_8080_8080;
        let before_ff = (ff.leading_zeros() / 8) as usize;
        let room = ((64 - self.available) / 8) as usize;
        let take = room.min(before_ff);
        if take == 0 {
            return;
        }
        let bits = take as u32 * 8;
        self.buffer |= (word >> (64 - bits)) << (64 - self.available - bits);
        self.available += bits;
        self.at += take;
    }

    fn consume(&mut self, count: u32) {
        self.buffer = if count >= 64 { 0 } else { self.buffer << count };
        self.available -= count;
    }

    /// `count` (≤ 32) bits, most significant first.
    fn read(&mut self, count: u32) -> Result<u32, String> {
        if count == 0 {
            return Ok(0);
        }
        if self.available < count {
            self.fill();
            if self.available < count {
                return Err("truncated JPEG-LS data".into());
            }
        }
        let value = (self.buffer >> (64 - count)) as u32;
        self.consume(count);
        Ok(value)
    }

    /// Zero bits before the next 1 bit (consumed too); more than `max` is an error.
    fn count_zeros(&mut self, max: u32) -> Result<u32, String> {
        let mut zeros = 0;
        loop {
            if self.available == 0 {
                self.fill();
                if self.available == 0 {
                    return Err("truncated JPEG-LS data".into());
                }
            }
            let leading = self.buffer.leading_zeros().min(self.available);
            if leading < self.available {
                self.consume(leading + 1);
                zeros += leading;
                break;
            }
            zeros += leading;
            self.consume(leading);
            if zeros > max {
                break;
            }
        }
        if zeros > max {
            return Err("corrupt JPEG-LS data (Golomb code too long)".into());
        }
        Ok(zeros)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Thresholds of T.87 Table C.3 for 8 and 16 bits, and the low-MAXVAL branch.
    #[test]
    fn default_thresholds_follow_the_standard() {
        assert_eq!(default_thresholds(255, 0), [3, 7, 21]);
        assert_eq!(default_thresholds(4095, 0), [18, 67, 276]);
        assert_eq!(default_thresholds(65535, 0), [18, 67, 276]);
        assert_eq!(default_thresholds(255, 3), [12, 22, 42]);
        // MAXVAL 15: FACTOR 16, BASIC_T / 16 = 0 → the minima 2, 3, 4.
        assert_eq!(default_thresholds(15, 0), [2, 3, 4]);
    }

    /// The closed form agrees with the definition's loop.
    #[test]
    fn golomb_parameter_is_the_least_k_with_n_shifted_at_least_a() {
        for n in 1..=70i64 {
            for a in 0..5000i64 {
                let mut k = 0;
                while (n << k) < a {
                    k += 1;
                }
                assert_eq!(golomb_parameter(n, a), k, "N {n} A {a}");
            }
        }
    }

    /// An 0xFF byte is followed by a stuffed 0 bit; 0xFF then ≥ 0x80 is a marker.
    #[test]
    fn bit_reader_skips_stuffed_bits_and_stops_at_markers() {
        let mut bits = BitReader::new(&[0xFF, 0x7F, 0xFF, 0xD9]);
        assert_eq!(bits.read(8).unwrap(), 0xFF);
        assert_eq!(bits.read(7).unwrap(), 0x7F);
        assert!(bits.read(1).is_err());
        let mut zeros = BitReader::new(&[0x00, 0x01]);
        assert_eq!(zeros.count_zeros(20).unwrap(), 15);
        let mut too_long = BitReader::new(&[0x00, 0x01]);
        assert!(too_long.count_zeros(10).is_err());
    }

    #[test]
    fn headers_that_cannot_be_decoded_are_refused() {
        let frame = |components: u8, precision: u8| {
            let mut bytes = vec![0xFF, SOI, 0xFF, SOF55, 0, 8 + 3 * components];
            bytes.extend([precision, 0, 2, 0, 2, components]);
            for id in 0..components {
                bytes.extend([id + 1, 0x11, 0]);
            }
            bytes.extend([0xFF, SOS, 0, 8, 1, 1, 0, 0, 0, 0, 0xFF, EOI]);
            bytes
        };
        assert!(decode(&frame(2, 8), 100)
            .unwrap_err()
            .contains("2 components"));
        // Three components in a scan of one, interleave mode 1: not a combination.
        assert!(decode(&frame(3, 8), 100).is_err());
        assert!(decode(&frame(1, 17), 100)
            .unwrap_err()
            .contains("precision"));
        assert!(decode(&frame(1, 8), 3).unwrap_err().contains("2x2"));
        assert!(decode(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 2], 100)
            .unwrap_err()
            .contains("other JPEG process"));
        assert!(decode(b"not jpeg", 100).is_err());
    }
}
