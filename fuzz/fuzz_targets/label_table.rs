//! Any text given to the label-table parsers (CSV and Slicer colour table) gives a
//! table or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_io::labels::LabelTable;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(table) = LabelTable::from_csv_text("fuzz.csv", &text) {
        let _ = table.iter().count();
    }
    if let Ok(table) = LabelTable::from_color_table_text("fuzz.ctbl", &text) {
        let _ = table.iter().count();
    }
});
