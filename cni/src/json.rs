//! An order-preserving JSON value.
//!
//! The plugin passes `prevResult` through and the installer rewrites CNI
//! configuration files that people read and diff, so both must keep the key
//! order they were given. `serde_json`'s `preserve_order` feature would do
//! it, but Cargo unifies features across a workspace and it would silently
//! change the key order of every `serde_json::Value` the other crates print.
//! This type keeps the order locally instead.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

/// A JSON value whose objects keep their keys in document order.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The value under `key` when `self` is an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_array_mut(&mut self) -> Option<&mut Vec<Json>> {
        match self {
            Json::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Vec<(String, Json)>> {
        match self {
            Json::Object(fields) => Some(fields),
            _ => None,
        }
    }

    /// Sets `key` in an object: replaced where it is, or appended at `end`
    /// (or inserted first when `end` is false). No-op on non-objects.
    pub fn set(&mut self, key: &str, value: Json, end: bool) {
        if let Json::Object(fields) = self {
            if let Some(slot) = fields.iter_mut().find(|(k, _)| k == key) {
                slot.1 = value;
            } else if end {
                fields.push((key.to_string(), value));
            } else {
                fields.insert(0, (key.to_string(), value));
            }
        }
    }

    /// Removes `key` from an object, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Json> {
        let fields = self.as_object_mut()?;
        let at = fields.iter().position(|(k, _)| k == key)?;
        Some(fields.remove(at).1)
    }

    /// Equality that ignores key order, as JSON semantics do.
    pub fn same_as(&self, other: &Json) -> bool {
        match (self, other) {
            (Json::Object(a), Json::Object(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| other.get(k).is_some_and(|w| v.same_as(w)))
            }
            (Json::Array(a), Json::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
            }
            _ => self == other,
        }
    }

    pub fn str(s: &str) -> Json {
        Json::String(s.to_string())
    }

    /// Pretty text with two-space indentation and a final newline, the
    /// layout most shipped CNI configuration files use.
    pub fn to_pretty(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("serializing JSON cannot fail");
        out.push(b'\n');
        out
    }

    pub fn parse(bytes: &[u8]) -> serde_json::Result<Json> {
        serde_json::from_slice(bytes)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => ser.serialize_unit(),
            Json::Bool(b) => ser.serialize_bool(*b),
            Json::Number(n) => n.serialize(ser),
            Json::String(s) => ser.serialize_str(s),
            Json::Array(items) => {
                let mut seq = ser.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(fields) => {
                let mut map = ser.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Json, D::Error> {
        de.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Json, D::Error> {
        Json::deserialize(de)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Json, E> {
        Ok(Json::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Json, E> {
        Ok(Json::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(n)
            .map(Json::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_string()))
    }

    fn visit_string<E>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields: Vec<(String, Json)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            // A repeated key keeps its first position and its last value,
            // which is what Go's encoding/json (libcni) does too.
            if let Some(slot) = fields.iter_mut().find(|(key, _)| *key == k) {
                slot.1 = v;
            } else {
                fields.push((k, v));
            }
        }
        Ok(Json::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_through_a_round_trip() {
        let text = br#"{"zeta":1,"alpha":{"y":[true,null,"s"],"b":2.5},"mid":-3}"#;
        let json = Json::parse(text).unwrap();
        assert_eq!(serde_json::to_vec(&json).unwrap(), text.to_vec());
    }

    #[test]
    fn same_as_ignores_key_order_but_not_values() {
        let a = Json::parse(br#"{"a":1,"b":[1,2]}"#).unwrap();
        let b = Json::parse(br#"{"b":[1,2],"a":1}"#).unwrap();
        let c = Json::parse(br#"{"b":[2,1],"a":1}"#).unwrap();
        assert!(a.same_as(&b));
        assert!(!a.same_as(&c));
        assert_ne!(a, b);
    }

    #[test]
    fn set_replaces_in_place_or_inserts() {
        let mut j = Json::parse(br#"{"a":1,"b":2}"#).unwrap();
        j.set("a", Json::str("x"), true);
        j.set("first", Json::Null, false);
        j.set("last", Json::Bool(true), true);
        assert_eq!(
            serde_json::to_string(&j).unwrap(),
            r#"{"first":null,"a":"x","b":2,"last":true}"#
        );
        assert_eq!(j.remove("b"), Some(Json::Number(2.into())));
        assert_eq!(j.remove("b"), None);
    }
}
