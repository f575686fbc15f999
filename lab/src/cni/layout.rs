//! How a lab wires its pods: by hand the way Calico does, or by the
//! reference CNI plugins the way kindnet (ptp) and flannel, kubenet or
//! minikube (bridge) do.

use std::fmt;
use std::str::FromStr;

/// The pod wiring of a lab node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CniLayout {
    /// Calico-style, wired by the lab itself: `cali<hash>` host veths,
    /// /32 and /128 host routes, proxy ARP, `169.254.1.1` and `fe80::1`
    /// as gateways (see `topology`).
    #[default]
    Routed,
    /// The `ptp` plugin with `host-local` IPAM: a veth per pod, a host
    /// route per pod address, the pod's default route via the address the
    /// plugin puts on the host side.
    Ptp,
    /// The `bridge` plugin with `host-local` IPAM: every host veth is a
    /// port of `cni0`, which holds the gateway addresses; only the subnet
    /// route on the bridge, no per-pod host routes.
    Bridge,
}

impl CniLayout {
    pub const ALL: [CniLayout; 3] = [CniLayout::Routed, CniLayout::Ptp, CniLayout::Bridge];

    /// The main plugin's binary (its `type`), `None` for the lab's own wiring.
    pub fn plugin(self) -> Option<&'static str> {
        match self {
            CniLayout::Routed => None,
            CniLayout::Ptp => Some("ptp"),
            CniLayout::Bridge => Some("bridge"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            CniLayout::Routed => "routed",
            CniLayout::Ptp => "ptp",
            CniLayout::Bridge => "bridge",
        }
    }
}

impl fmt::Display for CniLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CniLayout {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<CniLayout> {
        CniLayout::ALL
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("unknown CNI layout {s:?} (expected routed, ptp or bridge)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in CniLayout::ALL {
            assert_eq!(l.to_string().parse::<CniLayout>().unwrap(), l);
        }
        assert_eq!(CniLayout::default(), CniLayout::Routed);
        let e = "flannel".parse::<CniLayout>().unwrap_err().to_string();
        assert!(e.contains("routed, ptp or bridge"), "{e}");
    }
}
