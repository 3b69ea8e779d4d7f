//! Any text given as a target (`pinhole_volume::TargetSpec`: a label name with an
//! optional `:aim`, `x,y,z` or `x,y,z,r` in LPS mm) parses to a spec or an error, never a
//! panic; a parsed point is finite and a sphere's radius positive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinhole_volume::TargetSpec;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match text.parse::<TargetSpec>() {
        Ok(TargetSpec::Point(p)) => assert!(p.iter().all(|v| v.is_finite())),
        Ok(TargetSpec::Sphere {
            center_lps,
            radius_mm,
        }) => {
            assert!(center_lps.iter().all(|v| v.is_finite()));
            assert!(
                radius_mm > 0.0 && radius_mm.is_finite(),
                "radius {radius_mm}"
            );
        }
        Ok(TargetSpec::Label { name, .. }) => assert!(!name.is_empty()),
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
