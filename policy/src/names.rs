//! Syntax checks for the names Kubernetes validates: label keys and values,
//! object names, and `IANA_SVC_NAME` port names. Each returns a message
//! saying what is wrong, for the caller to attach to a field.

/// RFC 1123 label: what a namespace name must be (1-63 chars, lowercase
/// alphanumerics and '-', starting and ending alphanumeric).
pub fn check_dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?}: must be 1-63 characters"));
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !s.chars().all(ok_char) || !s.starts_with(alnum) || !s.ends_with(alnum) {
        return Err(format!(
            "{s:?}: must consist of lowercase alphanumerics and '-', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: what pod and policy names must be (up to 253
/// chars, dot-separated labels).
pub fn check_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?}: must be 1-253 characters"));
    }
    if s.split('.').all(|part| check_dns_label(part).is_ok()) {
        Ok(())
    } else {
        Err(format!(
            "{s:?}: must be lowercase alphanumerics, '-' and '.', each dot-separated part starting and ending with an alphanumeric"
        ))
    }
}

/// The name part of a label key and a non-empty label value: up to 63
/// chars of alphanumerics, '-', '_' and '.', starting and ending
/// alphanumeric.
fn check_label_name(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// A label key: `[prefix/]name`, prefix a DNS subdomain.
pub fn check_label_key(s: &str) -> Result<(), String> {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        check_dns_subdomain(p).map_err(|e| format!("label key prefix {e}"))?;
    }
    if !check_label_name(name) {
        return Err(format!(
            "label key {s:?}: name part must be 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ));
    }
    Ok(())
}

/// A label value: empty, or like the name part of a key.
pub fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || check_label_name(s) {
        Ok(())
    } else {
        Err(format!(
            "label value {s:?}: must be empty or 1-63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric"
        ))
    }
}

/// `IANA_SVC_NAME`: 1-15 chars, lowercase alphanumerics and '-', at least
/// one letter, no leading, trailing or doubled '-'. This is what a named
/// container port and a NetworkPolicy named port must be.
pub fn check_port_name(s: &str) -> Result<(), String> {
    let problem = if s.is_empty() || s.len() > 15 {
        Some("must be 1-15 characters")
    } else if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        Some("must contain only lowercase alphanumerics and '-'")
    } else if !s.chars().any(|c| c.is_ascii_lowercase()) {
        Some("must contain at least one letter")
    } else if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        Some("must not start or end with '-' or contain '--'")
    } else {
        None
    };
    match problem {
        Some(p) => Err(format!("port name {s:?}: {p}")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names() {
        for ok in ["http", "serve-80-tcp", "a", "dns-tcp", "x1"] {
            assert!(check_port_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "80",
            "HTTP",
            "-http",
            "http-",
            "ht--tp",
            "a-very-long-port-name",
            "ht_tp",
        ] {
            assert!(check_port_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        for ok in [
            "pod",
            "app.kubernetes.io/name",
            "kubernetes.io/metadata.name",
            "A_b.c-D",
        ] {
            assert!(check_label_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-pod", "pod-", "Example.com/x", "a/", "/a", "x y"] {
            assert!(check_label_key(bad).is_err(), "{bad}");
        }
        for ok in ["", "a", "v1.2_3-x"] {
            assert!(check_label_value(ok).is_ok(), "{ok}");
        }
        for bad in ["-a", "a b", &"x".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn object_names() {
        assert!(check_dns_label("kube-system").is_ok());
        assert!(check_dns_label("Kube").is_err());
        assert!(check_dns_label("a.b").is_err());
        assert!(check_dns_subdomain("web-0.frontend").is_ok());
        assert!(check_dns_subdomain("web..0").is_err());
    }
}
