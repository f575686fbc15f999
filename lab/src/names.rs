//! Names of everything the lab creates.
//!
//! Network namespaces are global, so they carry the lab id:
//! `pl-<id>-n` for the node, `pl-<id>-p<k>` for pod `k` and `pl-<id>-o`
//! for a host outside the cluster behind the node, where `<id>` is
//! six random hex digits. Interfaces live inside those namespaces and only
//! need to be unique there; the host side of a pod's veth is named the way
//! Calico names it (`cali` + 11 hex digits of a hash of the pod), which is
//! what an agent looking for pod interfaces by route will meet in practice.

/// Every lab namespace starts with this.
pub const NETNS_PREFIX: &str = "pl-";

/// Length of the hex lab id.
pub const ID_LEN: usize = 6;

pub fn node_netns(id: &str) -> String {
    format!("{NETNS_PREFIX}{id}-n")
}

pub fn pod_netns(id: &str, index: usize) -> String {
    format!("{NETNS_PREFIX}{id}-p{index}")
}

pub fn outside_netns(id: &str) -> String {
    format!("{NETNS_PREFIX}{id}-o")
}

/// The lab id of a namespace name made by [`node_netns`], [`pod_netns`]
/// or [`outside_netns`];
/// `None` for anything else (namespaces of other tools are never touched).
pub fn lab_id_of_netns(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(NETNS_PREFIX)?;
    let (id, tail) = rest.split_once('-')?;
    let well_formed_tail = tail == "n"
        || tail == "o"
        || tail
            .strip_prefix('p')
            .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()));
    (is_lab_id(id) && well_formed_tail).then_some(id)
}

pub fn is_lab_id(id: &str) -> bool {
    id.len() == ID_LEN && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A fresh random lab id.
pub fn random_id() -> String {
    let bytes = crate::rand::bytes::<3>();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Host-side veth name of a pod: `cali` + 11 hex digits (15 characters,
/// the kernel's limit), stable for a given `namespace/name`.
pub fn host_veth(namespace: &str, name: &str) -> String {
    // FNV-1a: stable across runs and platforms, no dependency.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in namespace.bytes().chain([b'.']).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("cali{:011x}", h & 0x0fff_ffff_ffff)
}

/// Pod-side interface name, as every CNI plugin names it.
pub const POD_IFACE: &str = "eth0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netns_names_round_trip() {
        assert_eq!(lab_id_of_netns(&node_netns("0a1b2c")), Some("0a1b2c"));
        assert_eq!(lab_id_of_netns(&pod_netns("0a1b2c", 12)), Some("0a1b2c"));
        assert_eq!(lab_id_of_netns(&outside_netns("0a1b2c")), Some("0a1b2c"));
        assert_eq!(lab_id_of_netns("pl-0a1b2c-x"), None);
        assert_eq!(lab_id_of_netns("pl-0a1b2c-p"), None);
        assert_eq!(lab_id_of_netns("pl-agent-n"), None);
        assert_eq!(lab_id_of_netns("pl-0A1B2C-n"), None);
    }

    #[test]
    fn host_veth_fits_ifnamsiz() {
        let n = host_veth("a-very-long-namespace-name", "a-very-long-pod-name-0");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("cali"));
        assert_ne!(host_veth("x", "ab"), host_veth("xa", "b"));
    }

    #[test]
    fn random_ids_are_well_formed() {
        let id = random_id();
        assert!(is_lab_id(&id), "{id}");
    }
}
