//! Edits of a network configuration document.

use crate::json::Json;

/// The plugin's `type`, the name of its binary.
pub const PLUGIN_TYPE: &str = "palisade-cni";

/// A single-plugin configuration (`.conf`) as the equivalent list: the
/// network keys (`cniVersion`, `name`) move up, everything else stays in
/// the plugin. Runtimes do the same conversion when they load a `.conf`.
pub fn conf_to_conflist(mut conf: Json) -> Json {
    let mut list = Vec::new();
    for key in ["cniVersion", "name"] {
        if let Some(v) = conf.remove(key) {
            list.push((key.to_string(), v));
        }
    }
    list.push(("plugins".to_string(), Json::Array(vec![conf])));
    Json::Object(list)
}

fn is_ours(plugin: &Json) -> bool {
    plugin.get("type").and_then(Json::as_str) == Some(PLUGIN_TYPE)
}

/// Puts our entry last in `plugins`: an existing one keeps its other keys
/// and their order and gets `keys` set; duplicates are dropped.
pub fn put_entry(doc: &mut Json, keys: &[(String, Json)]) -> Result<(), String> {
    let plugins = plugins_mut(doc).ok_or("plugins: missing or not an array")?;
    let mut entry = None;
    plugins.retain(|p| {
        if is_ours(p) {
            entry.get_or_insert_with(|| p.clone());
            false
        } else {
            true
        }
    });
    let mut entry =
        entry.unwrap_or_else(|| Json::Object(vec![("type".into(), Json::str(PLUGIN_TYPE))]));
    for (k, v) in keys {
        entry.set(k, v.clone(), true);
    }
    plugins.push(entry);
    Ok(())
}

/// Removes our entries; whether there were any.
pub fn remove_entry(doc: &mut Json) -> bool {
    let Some(plugins) = plugins_mut(doc) else {
        return false;
    };
    let before = plugins.len();
    plugins.retain(|p| !is_ours(p));
    plugins.len() != before
}

/// Whether `doc` lists our plugin.
pub fn has_entry(doc: &Json) -> bool {
    doc.get("plugins")
        .and_then(Json::as_array)
        .is_some_and(|p| p.iter().any(is_ours))
}

fn plugins_mut(doc: &mut Json) -> Option<&mut Vec<Json>> {
    doc.as_object_mut()?
        .iter_mut()
        .find(|(k, _)| k == "plugins")
        .and_then(|(_, v)| v.as_array_mut())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Json {
        Json::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn entry_goes_last_and_is_updated_in_place() {
        let mut doc = j(
            r#"{"name":"n","plugins":[{"type":"palisade-cni","logLevel":"debug","stateDir":"/a"},{"type":"portmap"}]}"#,
        );
        put_entry(&mut doc, &[("stateDir".into(), Json::str("/b"))]).unwrap();
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"name":"n","plugins":[{"type":"portmap"},{"type":"palisade-cni","logLevel":"debug","stateDir":"/b"}]}"#
        );
        assert!(remove_entry(&mut doc));
        assert!(!remove_entry(&mut doc));
        assert_eq!(
            serde_json::to_string(&doc).unwrap(),
            r#"{"name":"n","plugins":[{"type":"portmap"}]}"#
        );
    }

    #[test]
    fn conf_becomes_a_one_plugin_list() {
        let list = conf_to_conflist(j(
            r#"{"cniVersion":"0.4.0","name":"bridge","type":"bridge","bridge":"cni0"}"#,
        ));
        assert_eq!(
            serde_json::to_string(&list).unwrap(),
            r#"{"cniVersion":"0.4.0","name":"bridge","plugins":[{"type":"bridge","bridge":"cni0"}]}"#
        );
        assert!(put_entry(&mut j(r#"{"name":"x"}"#), &[]).is_err());
    }
}
