//! Egress decisions deferred past DNAT (Services). A pod's packet to a
//! Service ClusterIP passes its own egress hook undecided (`RULE_SERVICE`):
//! kube-proxy rewrites the destination only after that hook. The decision
//! is taken where the backend is known: at the backend's hook when it is on
//! this node (`pod_ingress`), at the node's uplink otherwise
//! (`node_egress`). Both find the client by its source address, which
//! anti-spoofing at its own hook vouches for.
//!
//! A flow decided at the client's own hook (direct pod-to-pod traffic) has
//! a conntrack entry under the client's ifindex for this exact tuple, so it
//! is never decided twice.

use aya_ebpf::maps::lpm_trie::Key;
use palisade_common::{
    CtKey, Endpoint, IpKey, PortKey, ServiceKey, DIR_EGRESS, EP_DENY_ALL, EP_PENDING,
    REASON_POLICY, RULE_WOULD_DENY,
};

use crate::{
    account::{self, Verdict},
    conntrack,
    events::{self, Source},
    hook,
    maps::{record, LOCAL_ADDRS, SERVICES},
    policy,
};

/// Whether `key` is a Service frontend: a ClusterIP with one of its
/// Service's protocols and ports. Callers build the key in memory they
/// already have (the scratch, or the spare bytes of an address key): the
/// paths that ask sit at BPF's combined stack limit.
#[inline(always)]
pub fn service(key: &ServiceKey) -> bool {
    unsafe { SERVICES.get(key) }.is_some()
}

/// A local pod whose egress a packet must still pass.
pub struct Client {
    pub ifindex: u32,
    pub ep: &'static Endpoint,
}

/// The local pod that sent a packet, when its egress policy applies here:
/// not the hook's own pod (its hook decided), isolated for egress, and
/// programmed (a pending or deny-all pod's hook drops all).
///
/// The sender is the pod whose host interface the packet came in on
/// (`__sk_buff.ingress_ifindex`), whatever NAT did to its source since: a
/// flow that kube-proxy, ip-masq-agent or a CNI masqueraded to the node's
/// address is still its client's. A packet that did not come in on a pod
/// interface is looked up by its source `addr` (`LOCAL_ADDRS`). The
/// record found by `ingress_ifindex` is the one used: every new flow from
/// a pod of this node asks, and a second lookup cost it about 25 ns.
#[inline(always)]
pub fn client(ingress_ifindex: u32, addr: &IpKey, hook_ifindex: u32) -> Option<Client> {
    let (ifindex, ep) = match record(ingress_ifindex) {
        Some(ep) => (ingress_ifindex, ep),
        None => {
            let ifindex = *unsafe { LOCAL_ADDRS.get(addr) }?;
            (ifindex, record(ifindex)?)
        }
    };
    if ifindex == hook_ifindex {
        return None;
    }
    let flags = ep.flags;
    if flags & (EP_PENDING | EP_DENY_ALL) != 0 || !hook::isolated(flags, DIR_EGRESS) {
        return None;
    }
    Some(Client { ifindex, ep })
}

/// Decides `c`'s egress for the flow of the normalized conntrack key `k`
/// (`swapped`: whether normalizing swapped the packet's ends), the
/// destination's filled LPM keys `peer` and `port`. True to pass. Sets
/// `k.ifindex` to the client's: callers that reuse `k` restore it.
#[inline(always)]
pub fn decide(
    c: &Client,
    k: &mut CtKey,
    swapped: bool,
    peer: &Key<IpKey>,
    port: &Key<PortKey>,
    len: u64,
) -> bool {
    k.ifindex = c.ifindex;
    // Any entry of the client's policy epoch, whatever its orientation:
    // the client's own hook decided this tuple (its SYN included). One of
    // an earlier epoch is decided again below.
    if conntrack::live(c.ep, k, 0).is_some_and(|r| r != conntrack::STALE && r != conntrack::CUT) {
        return true;
    }
    let src = Source {
        slot: c.ep.slot as u32,
        ifindex: c.ifindex,
        dir: DIR_EGRESS,
        generation: c.ep.generation,
    };
    // The backend is a pod: after DNAT a peer is never the node here.
    let result = policy::check_dir(c.ifindex, DIR_EGRESS, c.ep, peer, port, false);
    // A cluster Deny is final: audit mode does not soften it.
    let deny = policy::cluster_deny(result);
    let rule = match result {
        Some(r) if deny.is_none() => r,
        _ if deny.is_none() && hook::audited(c.ep.flags, DIR_EGRESS) => RULE_WOULD_DENY,
        _ => {
            turn(k, swapped);
            events::denied(&src, REASON_POLICY, result, k);
            turn(k, swapped);
            account::denied(src.slot, DIR_EGRESS, result, len);
            return false;
        }
    };
    conntrack::create(c.ep, k, rule, swapped);
    if rule == RULE_WOULD_DENY {
        // The client's hook counted the packet as allowed (undecided); what
        // was decided here is counted here.
        account::packet(src.slot, DIR_EGRESS, Verdict::WouldDeny, len);
    }
    turn(k, swapped);
    events::flow(&src, REASON_POLICY, rule, k);
    turn(k, swapped);
    true
}

/// Turns `k` from normalized to the orientation the packet was seen in,
/// or back: events report packets as seen. Not a closure-taking helper:
/// the closures were emitted out of line, with frames of their own that
/// the verifier adds to the general path's.
#[inline(always)]
fn turn(k: &mut CtKey, swapped: bool) {
    if swapped {
        conntrack::reverse(k);
    }
}
