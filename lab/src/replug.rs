//! A pod's interface deleted and made again, as a runtime does when a
//! pod's sandbox is re-created: for tests of what the agent makes of an
//! interface that comes back under the index it had.

use crate::cni::CniLayout;
use crate::lab::Lab;
use crate::topology;
use anyhow::{bail, Context, Result};

impl Lab {
    /// Deletes the pod's veth pair and wires it again (routed layout
    /// only), its host side at the ifindex it had; the pod's addresses
    /// only if `addresses` (then no packet reaches the pod until
    /// [`Lab::add_pod_addresses`]). Returns the ifindex.
    pub fn replug_pod(&self, key: &str, addresses: bool) -> Result<u32> {
        if self.cni_layout() != CniLayout::Routed {
            bail!("lab {}: replug_pod needs the routed layout", self.id());
        }
        let ifindex = self.host_ifindex(key)?;
        let pod = self.pod(key)?;
        let node = self.node.clone().context("lab has no node namespace")?;
        topology::replug_pod(
            &node,
            &pod.ns,
            &pod.spec,
            &pod.host_veth,
            ifindex,
            addresses,
        )?;
        let now = self.host_ifindex(key)?;
        if now != ifindex {
            bail!("pod {key}: its interface came back at index {now}, not {ifindex}");
        }
        Ok(ifindex)
    }

    /// Gives the pod its addresses back (after `replug_pod` without).
    pub fn add_pod_addresses(&self, key: &str) -> Result<()> {
        let pod = self.pod(key)?;
        topology::add_pod_addresses(&pod.ns, &pod.spec)
    }
}
