//! What label names say about anatomy: the one list of vessel keywords, shared by the
//! vessel router (which vessels a catheter may use) and ablation (which vessels are heat
//! sinks). Names follow TotalSegmentator's classes (`aorta`, `portal_vein_and_splenic_vein`,
//! `common_carotid_artery_left`, `hepatic_vessel`); matching is case-insensitive.

/// What kind of vessel a label is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VesselKind {
    /// Arteries: `aorta`, `*arter*`, `*trunk*` (brachiocephalic, coeliac).
    Artery,
    /// Veins: `*vein*`, `*vena*` (vena cava, iliac `vena`).
    Vein,
    /// Labels that hold both (`hepatic_vessel`: hepatic and portal veins with arteries).
    Mixed,
}

/// Substrings of arterial label names.
const ARTERY_KEYWORDS: [&str; 3] = ["aorta", "arter", "trunk"];
/// Substrings of venous label names.
const VEIN_KEYWORDS: [&str; 2] = ["vein", "vena"];
/// Substrings of labels that mix arteries and veins.
const MIXED_KEYWORDS: [&str; 1] = ["hepatic_vessel"];

/// The kind of vessel a label name denotes, or `None` when it is not a vessel.
pub fn vessel_kind(name: &str) -> Option<VesselKind> {
    let name = name.to_ascii_lowercase();
    let has = |keywords: &[&str]| keywords.iter().any(|k| name.contains(k));
    if has(&MIXED_KEYWORDS) {
        Some(VesselKind::Mixed)
    } else if has(&VEIN_KEYWORDS) {
        Some(VesselKind::Vein)
    } else if has(&ARTERY_KEYWORDS) {
        Some(VesselKind::Artery)
    } else {
        None
    }
}

/// Whether a label name is a vessel of any kind.
pub fn is_vessel(name: &str) -> bool {
    vessel_kind(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totalsegmentator_vessels_are_classified() {
        for (name, kind) in [
            ("aorta", VesselKind::Artery),
            ("common_carotid_artery_left", VesselKind::Artery),
            ("brachiocephalic_trunk", VesselKind::Artery),
            ("iliac_artery_right", VesselKind::Artery),
            ("inferior_vena_cava", VesselKind::Vein),
            ("portal_vein_and_splenic_vein", VesselKind::Vein),
            ("iliac_vena_left", VesselKind::Vein),
            ("pulmonary_vein", VesselKind::Vein),
            ("Hepatic_Vessel", VesselKind::Mixed),
        ] {
            assert_eq!(vessel_kind(name), Some(kind), "{name}");
        }
        for name in [
            "liver",
            "kidney_left",
            "heart",
            "trachea",
            "atrial_appendage_left",
        ] {
            assert_eq!(vessel_kind(name), None, "{name}");
        }
    }
}
