//! The CNI error result and its codes.

use serde::Serialize;

/// Well-known codes (CNI spec, section 5) and the plugin's own (100+).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODING_FAILURE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;

    /// The pod's host-side interface could not be determined.
    pub const HOST_INTERFACE: u32 = 100;
    /// The attachment record could not be written, read or removed.
    pub const RECORD: u32 = 101;
    /// The holder could not hold the interface pending (ADD).
    pub const HOLD: u32 = 102;
    /// The holder could not release the interface (DEL).
    pub const RELEASE: u32 = 103;
    /// CHECK found the attachment missing or different from `prevResult`.
    pub const CHECK: u32 = 104;
    /// GC could not clean up every stale attachment.
    pub const GC: u32 = 105;
}

/// An error as the plugin reports it: a code, a short message and details.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}: {details} (code {code})")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// An error from a chain of causes: every cause goes into `details`.
    pub fn from_anyhow(code: u32, msg: impl Into<String>, err: &anyhow::Error) -> Self {
        CniError::new(code, msg, format!("{err:#}"))
    }

    /// The spec's error object for `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> Vec<u8> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            details: &'a str,
        }
        serde_json::to_vec(&Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .expect("serializing an error cannot fail")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_keys_in_order() {
        let e = CniError::new(7, "invalid network config", "prevResult: missing");
        assert_eq!(
            String::from_utf8(e.to_json("1.0.0")).unwrap(),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"prevResult: missing"}"#
        );
    }
}
