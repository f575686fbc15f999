//! The node's Service frontends (`CompiledNode::services`): every ClusterIP
//! of the cluster with each of its Service's ports, whatever the Service's
//! namespace or backends. The datapath defers a pod's egress decision on
//! them until after kube-proxy's DNAT, when the backend is known.

use crate::types::Frontend;
use palisade_policy::Service;
use std::collections::{BTreeSet, HashMap};

/// Frontends by Service, counted per frontend: one that two Services
/// claim for a moment (one deleted after the other took its ClusterIP
/// over) stays until neither has it.
#[derive(Debug, Default)]
pub struct ServiceIps {
    by_service: HashMap<String, Vec<Frontend>>,
    refs: HashMap<Frontend, usize>,
}

impl ServiceIps {
    /// Sets (`Some`) or removes (`None`) the frontends of Service `key`;
    /// keeps `out` equal to the set of every Service's frontends. Returns
    /// whether `out` changed.
    pub fn set(
        &mut self,
        key: &str,
        ips: Option<&[Frontend]>,
        out: &mut BTreeSet<Frontend>,
    ) -> bool {
        let old = match ips {
            Some(ips) => self.by_service.insert(key.to_string(), ips.to_vec()),
            None => self.by_service.remove(key),
        };
        let mut changed = false;
        for ip in ips.unwrap_or_default() {
            let n = self.refs.entry(*ip).or_default();
            *n += 1;
            if *n == 1 {
                changed |= out.insert(*ip);
            }
        }
        for ip in old.unwrap_or_default() {
            if let Some(n) = self.refs.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(&ip);
                    changed |= out.remove(&ip);
                }
            }
        }
        changed
    }

    /// Loads every Service of a model.
    pub fn load<'a>(
        &mut self,
        services: impl IntoIterator<Item = &'a Service>,
        out: &mut BTreeSet<Frontend>,
    ) {
        for s in services {
            self.set(&s.key(), Some(&Frontend::of(s)), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Frontend {
        Frontend {
            ip: s.parse().unwrap(),
            protocol: palisade_policy::Protocol::Tcp,
            port: 80,
        }
    }

    #[test]
    fn an_address_stays_while_any_service_has_it() {
        let (mut s, mut out) = (ServiceIps::default(), BTreeSet::new());
        assert!(s.set("a/x", Some(&[ip("10.96.0.1"), ip("fd00::1")]), &mut out));
        assert!(!s.set("a/y", Some(&[ip("10.96.0.1")]), &mut out));
        assert!(!s.set("a/x", Some(&[ip("10.96.0.1"), ip("fd00::1")]), &mut out));
        assert!(s.set("a/x", None, &mut out));
        assert_eq!(out, BTreeSet::from([ip("10.96.0.1")]));
        assert!(s.set("a/y", Some(&[ip("10.96.0.2")]), &mut out));
        assert_eq!(out, BTreeSet::from([ip("10.96.0.2")]));
        assert!(s.set("a/y", None, &mut out));
        assert!(out.is_empty());
        assert!(!s.set("a/y", None, &mut out), "deleting twice is a no-op");
    }
}
