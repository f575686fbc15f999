//! Programs a classifier with what the compiler and the writer's encoding
//! make of a model, so that crafted packets can be held against the
//! oracle: the whole chain from policy text to kernel verdict, without an
//! agent.

use super::{Classifier, DirMaps, IFINDEX};
use anyhow::{Context, Result};
use palisade_common::{PolicyKey, DIR_EGRESS, DIR_INGRESS};
use palisade_compiler::{compile, IdentityAllocator};
use palisade_datapath::encode::{self, host_ip};
use palisade_policy::Model;

/// Loads a classifier and programs pod `pod` (`namespace/name`, which must
/// be on `node` in `model`) on `IFINDEX`, and the node's identity trie.
pub fn program_pod(model: &Model, node: &str, pod: &str) -> Result<Classifier> {
    let compiled = compile(model, node, &mut IdentityAllocator::new());
    let cp = compiled
        .pods
        .get(pod)
        .with_context(|| format!("{pod} is not on {node}"))?;
    let mut c = Classifier::load()?;
    for (ip, id) in &compiled.identities {
        c.set_identity(*ip, if ip.is_ipv4() { 32 } else { 128 }, *id)?;
    }
    let (ep, maps) = encode::encode_pod(cp);
    for (direction, dm) in [(DIR_INGRESS, &maps.ingress), (DIR_EGRESS, &maps.egress)] {
        let Some(dm) = dm else { continue };
        let key = PolicyKey {
            ifindex: IFINDEX,
            generation: 0,
            direction,
        };
        c.set_policy(key, &harness_maps(dm)?)?;
    }
    c.set_endpoint(IFINDEX, &ep)?;
    Ok(c)
}

/// The writer's inner-map contents in the harness's form.
fn harness_maps(dm: &encode::DirMaps) -> Result<DirMaps> {
    let cidr = dm
        .cidrs
        .iter()
        .map(|((len, key), v)| {
            // The key's address at full length names the same address.
            let full = if key.family == palisade_common::FAMILY_V4 {
                40
            } else {
                136
            };
            let ip = host_ip((full, *key)).context("CIDR key of no family")?;
            Ok((ip, len - 8, *v))
        })
        .collect::<Result<_>>()?;
    Ok(DirMaps {
        identity: dm.identities.iter().map(|(k, v)| (*k, *v)).collect(),
        cidr,
        port: dm
            .ports
            .iter()
            .map(|((len, k), v)| (k.proto, u16::from_be_bytes(k.port_be), len - 8, *v))
            .collect(),
        spill: vec![],
        spill_values: dm.spill.iter().map(|(k, v)| (*k, *v)).collect(),
    })
}
