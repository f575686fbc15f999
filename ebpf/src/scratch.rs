//! Per-packet working memory in a per-CPU array: the parsed packet, the
//! header bytes being read and the lookup keys, plus the clock cache of
//! `clock.rs`. A classifier runs to its end on one CPU without being
//! preempted by another classifier run on the same CPU's slot, so the slot
//! is exclusively this packet's.

use aya_ebpf::{helpers::bpf_skb_load_bytes, maps::lpm_trie::Key, programs::TcContext};
use palisade_common::{FragKey, IpKey, PortKey, ServiceKey, SpillKey};

use crate::{maps::SCRATCH, parse::Packet};

#[repr(C)]
pub struct Scratch {
    /// The cached coarse clock (`clock.rs`): the jiffies value it was read
    /// at, and its value. These persist from packet to packet.
    pub clock_jiffies: u64,
    pub clock_ns: u64,
    pub pkt: Packet,
    /// Raw header bytes (an IPv6 header is the largest read).
    pub hdr: [u8; 40],
    pub frag: FragKey,
    pub ip: Key<IpKey>,
    pub port: Key<PortKey>,
    /// The `SERVICES` key of a refused flow's destination.
    pub service: ServiceKey,
    /// `__sk_buff.ingress_ifindex`: the device the packet came in on, 0
    /// when the node's own stack sent it. Kept here, not on the general
    /// path's stack, which has no room left.
    pub ingress_ifindex: u32,
    /// How the packet's flow is decided again (`hook::REDO_*`), kept here
    /// for the same reason.
    pub redo: u32,
    /// The key (an endpoint slot) of a `CONNTRACK_POD` or `FRAGMENTS_POD`
    /// lookup (`maps::in_slot`): a key on the stack would push the deepest
    /// call chain past its 512 bytes.
    pub table_slot: u32,
    /// A spill table lookup's key and what the lookups found so far
    /// (`policy::spilled`), here for the same reason: registers alone
    /// cannot carry them across the lookups.
    pub spill: SpillKey,
    pub spill_first: u32,
    pub spill_after: u32,
    /// The port classes `policy::spilled` looks up, and its peers: any
    /// peer (non-zero when some spilled group has no peers), the CIDR
    /// class, the identity.
    pub spill_classes: [u32; 2],
    pub spill_peers: [u32; 3],
}

#[inline(always)]
pub fn get() -> Option<&'static mut Scratch> {
    SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// Fills `dst` with the packet bytes at `off`; `Err` when the packet is
/// shorter than `off + dst.len()`. Callers pass constant-length slices, so
/// the verifier sees a constant size.
#[inline(always)]
pub fn load(ctx: &TcContext, off: usize, dst: &mut [u8]) -> Result<(), ()> {
    let ret = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb.cast(),
            off as u32,
            dst.as_mut_ptr().cast(),
            dst.len() as u32,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(())
    }
}
