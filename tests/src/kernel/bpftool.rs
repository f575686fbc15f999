//! Pinned state as `bpftool` shows it: an independent reader of what the
//! agent wrote, with the BTF field names of the records.

use super::run;
use serde_json::Value;
use std::path::Path;

/// `bpftool -j <args>`, parsed.
pub fn bpftool(args: &[&str]) -> Value {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    serde_json::from_str(&run("bpftool", &all)).expect("bpftool JSON")
}

/// The entries of the map pinned at `pin`: for maps with BTF the
/// "formatted" form, which names every field; the raw bytes otherwise.
pub fn dump(pin: &Path) -> Vec<Value> {
    let entries = bpftool(&["map", "dump", "pinned", pin.to_str().unwrap()]);
    entries
        .as_array()
        .expect("bpftool map dump prints an array")
        .iter()
        .map(|e| e.get("formatted").cloned().unwrap_or_else(|| e.clone()))
        .collect()
}
