//! The metadata the server owns: `uid`, `creationTimestamp` and
//! `generation` are set when an object is created and kept across its
//! updates, whoever writes it (clients or the test controls).

use k8s_openapi::chrono::{DateTime, SecondsFormat};
use serde_json::{json, Value};

/// Sets the server's fields of `object`, about to replace `stored` (None:
/// a creation, which gets `uid`). A field the writer set itself is kept.
pub fn server_fields(object: &mut Value, stored: Option<&Value>, uid: String) {
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    let before = stored.map(|s| &s["metadata"]);
    let carried = |field: &str| before.map(|m| m[field].clone()).filter(|v| !v.is_null());
    let meta = object["metadata"]
        .as_object_mut()
        .expect("made an object above");
    if meta.get("uid").is_none_or(Value::is_null) {
        meta.insert("uid".into(), carried("uid").unwrap_or(json!(uid)));
    }
    if meta.get("creationTimestamp").is_none_or(Value::is_null) {
        let now = json!(now());
        meta.insert(
            "creationTimestamp".into(),
            carried("creationTimestamp").unwrap_or(now),
        );
    }
    // The generation counts changes of the desired state (`spec`).
    let generation = match stored {
        None => 1,
        Some(s) => {
            let g = s["metadata"]["generation"].as_i64().unwrap_or(1);
            if s["spec"] == object["spec"] {
                g
            } else {
                g + 1
            }
        }
    };
    object["metadata"]["generation"] = json!(generation);
}

/// The time now in the API server's form (`2025-01-31T12:00:00Z`).
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A seed for uids: the clock and the process.
pub fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    mix(nanos ^ (u64::from(std::process::id()) << 32))
}

/// A uid in the API server's form (a random UUID's layout), unique per
/// revision of one server.
pub fn uid(seed: u64, revision: u64) -> String {
    let hi = mix(seed ^ revision);
    let lo = mix(hi ^ revision.rotate_left(17));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xfff,
        0x8000 | ((lo >> 48) & 0x3fff),
        lo & 0xffff_ffff_ffff
    )
}

/// splitmix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_objects_get_server_fields_and_updates_keep_them() {
        let mut created = json!({"metadata": {"name": "p"}, "spec": {"a": 1}});
        server_fields(&mut created, None, uid(1, 2));
        let m = &created["metadata"];
        assert_eq!(m["uid"].as_str().unwrap().len(), 36);
        assert!(m["creationTimestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(m["generation"], 1);

        let mut same = json!({"metadata": {"name": "p"}, "spec": {"a": 1}});
        server_fields(&mut same, Some(&created), uid(1, 3));
        assert_eq!(same["metadata"]["uid"], created["metadata"]["uid"]);
        assert_eq!(same["metadata"]["generation"], 1);
        let mut changed = json!({"metadata": {"name": "p"}, "spec": {"a": 2}});
        server_fields(&mut changed, Some(&same), uid(1, 4));
        assert_eq!(changed["metadata"]["generation"], 2);
        assert_ne!(uid(1, 3), uid(1, 4));
    }
}
