//! Any text given to the pose CSV parser gives poses or an error, never a panic; poses it
//! reads are written and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_io::pose_csv;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(poses) = pose_csv::parse(&text) {
        let again = pose_csv::parse(&pose_csv::to_text(&poses)).expect("written CSV reads back");
        assert_eq!(again, poses);
    }
});
