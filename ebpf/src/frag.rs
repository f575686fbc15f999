//! IP fragments: only the first fragment carries the ports, so its verdict is
//! recorded and the later fragments of the same datagram take it, for as
//! long as a receiver would still reassemble it (`FRAG_TIMEOUT_TICKS`).
//! A record past that is void: a datagram id reused later is decided by its
//! own first fragment, never by an old verdict.

use palisade_common::{FragKey, FragValue, FRAG_TICK_SHIFT, FRAG_TIMEOUT_TICKS};

use crate::{
    clock,
    maps::{in_slot, PodFragments, FRAGMENTS, FRAGMENTS_POD},
    parse::Tuple,
};

/// The own fragment table of the pod in endpoint slot `slot`, if it has
/// one (out of line and frameless, as `conntrack::own`).
#[inline(never)]
fn own(slot: u16) -> Option<&'static PodFragments> {
    let inner = in_slot(core::ptr::from_ref(&FRAGMENTS_POD).cast_mut().cast(), slot);
    // SAFETY: an array of maps' value is the inner map, alive for the run.
    unsafe { inner.cast::<PodFragments>().as_ref() }
}

/// The fragment records' clock (ticks of about a second).
#[inline(always)]
fn tick() -> u32 {
    (clock::now() >> FRAG_TICK_SHIFT) as u32
}

/// The key of datagram `id`: addresses of `t`, protocol `proto` (the
/// packet's `frag_proto`, the same for every fragment of the datagram).
#[inline(always)]
fn fill(k: &mut FragKey, ifindex: u32, id: u32, proto: u8, t: &Tuple) {
    k.ifindex = ifindex;
    k.id = id;
    k.proto = proto;
    k.src = t.src;
    k.dst = t.dst;
    k._pad = [0];
}

/// Remembers that the datagram `id` was allowed at this hook of the pod in
/// endpoint slot `slot`.
#[inline(always)]
pub fn record(k: &mut FragKey, slot: u16, ifindex: u32, id: u32, proto: u8, t: &Tuple) {
    let v = FragValue {
        sport: t.sport,
        dport: t.dport,
        expires: tick().wrapping_add(FRAG_TIMEOUT_TICKS),
    };
    fill(k, ifindex, id, proto, t);
    // Passed by reference: the key stays in the scratch, off the stack.
    let k: &FragKey = k;
    let _ = match own(slot) {
        Some(own) => own.insert(k, v, 0),
        None => FRAGMENTS.insert(k, v, 0),
    };
}

/// The recorded verdict of the datagram a later fragment belongs to, at a
/// hook of the pod in slot `slot`:
/// `None` when its first fragment was not seen, was denied, or passed too
/// long ago.
#[inline(always)]
pub fn verdict(
    k: &mut FragKey,
    slot: u16,
    ifindex: u32,
    id: u32,
    proto: u8,
    t: &Tuple,
) -> Option<bool> {
    fill(k, ifindex, id, proto, t);
    let k: &FragKey = k;
    let v = match own(slot) {
        Some(own) => unsafe { own.get(k) },
        None => unsafe { FRAGMENTS.get(k) },
    }?;
    // Wrapping: not negative while the record holds.
    let left = v.expires.wrapping_sub(tick()) as i32;
    Some(left >= 0)
}
