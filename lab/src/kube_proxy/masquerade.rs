//! kube-proxy's masquerading, in the nftables shape of its nftables mode.
//!
//! kube-proxy (iptables mode) does it in two steps: rules that decide a
//! connection needs SNAT jump to `KUBE-MARK-MASQ` (`MARK --set-xmark
//! 0x4000/0x4000`), and `KUBE-POSTROUTING` masquerades marked packets
//! (`mark ! 0x4000/0x4000 -j RETURN`, `MARK --xor-mark 0x4000`,
//! `MASQUERADE --random-fully`). The deciding rules:
//!
//! - `KUBE-SEP-*` (per endpoint): `-s <endpoint IP> -j KUBE-MARK-MASQ`: a
//!   pod reaching itself through its Service (hairpin). Without SNAT the
//!   backend would answer itself directly and the reply would never be
//!   un-DNATed.
//! - `KUBE-SVC-*` (per ClusterIP and port): `! -s <cluster CIDR> -d
//!   <ClusterIP> -j KUBE-MARK-MASQ`: a client that is no pod (a node, a
//!   host-network process) gets SNAT, so replies come back through the
//!   node that DNATed them. With `masqueradeAll` the rule has no source
//!   match: every Service connection is masqueraded.
//!
//! Here, in each `palisade_lab_kube_proxy` table:
//!
//! | kube-proxy | nftables here |
//! | --- | --- |
//! | `KUBE-MARK-MASQ` | chain `mark-for-masquerade`: `meta mark set meta mark \| 0x4000` |
//! | `KUBE-POSTROUTING` | chain `masquerading`: `meta mark & 0x4000 == 0 return`, `meta mark set meta mark ^ 0x4000`, `counter masquerade fully-random` |
//! | `POSTROUTING -j KUBE-POSTROUTING` | chain `postrouting` (hook postrouting, priority srcnat): `jump masquerading` |
//! | `KUBE-SVC-*` cluster CIDR rule | in `services`, before the ClusterIP's DNAT rule: `ip daddr <ClusterIP> tcp dport <port> ip saddr != { <pod prefixes> } jump mark-for-masquerade` (`Hairpin`), without the source match (`All`) |
//! | `KUBE-SEP-*` hairpin rule | first in each endpoint chain: `ip saddr <backend> jump mark-for-masquerade` |
//!
//! which is also what kube-proxy's own nftables mode writes. `masquerade`
//! takes the outgoing interface's address (the node's, for a backend on
//! this node). The pod prefixes stand for `--cluster-cidr`: every pod
//! address and host-local subnet the lab knows of (a lab's own pods, or
//! every node's for `Cluster::install_kube_proxy`).

use crate::cluster_spec::Cidr;
use palisade_policy::Family;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Which Service connections kube-proxy masquerades.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Masquerade {
    /// None: every client's address reaches the backend (not something
    /// kube-proxy can be told; a pod reaching itself through its Service
    /// then fails, as it would there).
    None,
    /// kube-proxy's default: hairpin connections (the client is the
    /// backend DNAT picked) and clients outside the cluster's pod CIDRs.
    #[default]
    Hairpin,
    /// `masqueradeAll: true`: every Service connection.
    All,
}

impl Masquerade {
    pub const ALL: [Masquerade; 3] = [Masquerade::None, Masquerade::Hairpin, Masquerade::All];

    fn name(self) -> &'static str {
        match self {
            Masquerade::None => "none",
            Masquerade::Hairpin => "hairpin",
            Masquerade::All => "all",
        }
    }
}

impl fmt::Display for Masquerade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Masquerade {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Masquerade> {
        Masquerade::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                anyhow::anyhow!("unknown masquerade mode {s:?} (expected none, hairpin or all)")
            })
    }
}

/// kube-proxy's masquerade mark (`--masquerade-bit` 14).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// The chain holding the masquerade rule (and its counter).
pub(crate) const MASQUERADING: &str = "masquerading";
const MARK_CHAIN: &str = "mark-for-masquerade";

/// The marking and masquerading chains (every table has them: with
/// `None` nothing jumps to the marking chain).
pub(crate) fn chains() -> String {
    let m = format!("{MASQUERADE_MARK:#x}");
    let lines = [
        format!("  chain {MARK_CHAIN} {{"),
        format!("    meta mark set meta mark | {m}"),
        "  }".to_string(),
        format!("  chain {MASQUERADING} {{"),
        format!("    meta mark & {m} == 0 return"),
        // Cleared as kube-proxy clears it: the mark is ours alone, and a
        // packet re-entering the stack (tunnelled) is not marked again.
        format!("    meta mark set meta mark ^ {m}"),
        "    counter masquerade fully-random".to_string(),
        "  }".to_string(),
        "  chain postrouting {".to_string(),
        "    type nat hook postrouting priority srcnat; policy accept;".to_string(),
        format!("    jump {MASQUERADING}"),
        "  }".to_string(),
    ];
    lines.join("\n") + "\n"
}

/// nft's source match of `family` (`ip saddr`).
fn saddr(family: Family) -> &'static str {
    match family {
        Family::V4 => "ip saddr",
        Family::V6 => "ip6 saddr",
    }
}

/// The service chain's marking rule for a ClusterIP and port (`matcher`:
/// `ip daddr <ClusterIP> tcp dport <port>`), if the mode has one.
/// `pod_prefixes` are those of the ClusterIP's family; none known means
/// no cluster CIDR rule (kube-proxy without a cluster CIDR writes none).
pub(crate) fn service_rule(
    mode: Masquerade,
    family: Family,
    matcher: &str,
    pod_prefixes: &[Cidr],
) -> Option<String> {
    match mode {
        Masquerade::None => None,
        Masquerade::All => Some(format!("{matcher} jump {MARK_CHAIN}")),
        Masquerade::Hairpin if pod_prefixes.is_empty() => None,
        Masquerade::Hairpin => {
            let set: Vec<String> = pod_prefixes.iter().map(Cidr::to_string).collect();
            Some(format!(
                "{matcher} {} != {{ {} }} jump {MARK_CHAIN}",
                saddr(family),
                set.join(", ")
            ))
        }
    }
}

/// The endpoint chain's hairpin rule for `backend` (every mode but `None`;
/// with `All` it is redundant, as in kube-proxy).
pub(crate) fn endpoint_rule(mode: Masquerade, backend: IpAddr) -> Option<String> {
    (mode != Masquerade::None).then(|| {
        format!(
            "{} {backend} jump {MARK_CHAIN}",
            saddr(Family::of(&backend))
        )
    })
}

/// `prefixes` of `family`, without duplicates and without those another
/// one covers (an nft interval set refuses overlapping elements).
pub(crate) fn merge(prefixes: impl IntoIterator<Item = Cidr>, family: Family) -> Vec<Cidr> {
    let mut all: Vec<Cidr> = prefixes
        .into_iter()
        .filter(|c| Family::of(&c.addr) == family)
        .collect();
    all.sort();
    all.dedup();
    all.iter()
        .filter(|c| !all.iter().any(|d| d != *c && d.covers(c)))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str, len: u8) -> Cidr {
        Cidr::new(s.parse().unwrap(), len)
    }

    #[test]
    fn names_round_trip() {
        for m in Masquerade::ALL {
            assert_eq!(m.to_string().parse::<Masquerade>().unwrap(), m);
        }
        assert_eq!(Masquerade::default(), Masquerade::Hairpin);
        let e = "some".parse::<Masquerade>().unwrap_err().to_string();
        assert!(e.contains("none, hairpin or all"), "{e}");
    }

    #[test]
    fn rules_per_mode() {
        let m = "ip daddr 10.96.0.10 tcp dport 80";
        let pods = [cidr("10.0.0.8", 29), cidr("10.0.1.10", 32)];
        assert_eq!(service_rule(Masquerade::None, Family::V4, m, &pods), None);
        assert_eq!(
            service_rule(Masquerade::All, Family::V4, m, &pods).unwrap(),
            "ip daddr 10.96.0.10 tcp dport 80 jump mark-for-masquerade"
        );
        assert_eq!(
            service_rule(Masquerade::Hairpin, Family::V4, m, &pods).unwrap(),
            "ip daddr 10.96.0.10 tcp dport 80 ip saddr != { 10.0.0.8/29, 10.0.1.10/32 } \
             jump mark-for-masquerade"
        );
        assert_eq!(service_rule(Masquerade::Hairpin, Family::V4, m, &[]), None);
        assert_eq!(
            endpoint_rule(Masquerade::None, "fd00::1".parse().unwrap()),
            None
        );
        assert_eq!(
            endpoint_rule(Masquerade::Hairpin, "fd00::1".parse().unwrap()).unwrap(),
            "ip6 saddr fd00::1 jump mark-for-masquerade"
        );
        let c = chains();
        assert!(c.contains("meta mark & 0x4000 == 0 return"), "{c}");
        assert!(c.contains("counter masquerade fully-random"), "{c}");
    }

    #[test]
    fn prefixes_are_merged_per_family() {
        let got = merge(
            [
                cidr("10.0.0.10", 32),
                cidr("10.0.0.8", 29),
                cidr("10.0.0.8", 29),
                cidr("10.0.1.10", 32),
                cidr("fd00::10", 128),
            ],
            Family::V4,
        );
        assert_eq!(got, vec![cidr("10.0.0.8", 29), cidr("10.0.1.10", 32)]);
    }
}
