//! Label tables (placeholder API; the full module lands from the `writers` branch).

use std::collections::BTreeMap;

use crate::Result;

#[derive(Debug, Clone, Default)]
pub struct LabelTable {
    names: BTreeMap<u32, String>,
}

impl LabelTable {
    pub fn totalsegmentator_v2() -> Self {
        Self::default()
    }
    pub fn load(_spec: &str) -> Result<Self> {
        Ok(Self::default())
    }
    pub fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(String::as_str)
    }
}
