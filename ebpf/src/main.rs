//! Palisade's TC classifiers: `pod_ingress` runs at TC egress of a pod's
//! host-side interface (packets going into the pod, checked against the
//! pod's ingress policy), `pod_egress` at its TC ingress (packets from the
//! pod, checked against its egress policy and for spoofed sources),
//! `node_egress` at TC egress of the node's uplink (flows to Services whose
//! backend is on another node).
//! See `docs/ebpf.md` and `docs/maps.md`.
#![no_std]
#![no_main]
// Atomic adds for the shared rule counters (`account.rs`).
#![allow(internal_features)]
#![feature(core_intrinsics)]

mod account;
mod clock;
mod conntrack;
mod deferred;
mod events;
mod fast;
mod frag;
mod hook;
mod maps;
mod node;
mod parse;
mod policy;
mod scratch;

use aya_ebpf::{macros::classifier, programs::TcContext};
use palisade_common::{DIR_EGRESS, DIR_INGRESS};

#[classifier]
pub fn pod_ingress(ctx: TcContext) -> i32 {
    hook::run(&ctx, DIR_INGRESS)
}

#[classifier]
pub fn pod_egress(ctx: TcContext) -> i32 {
    hook::run(&ctx, DIR_EGRESS)
}

/// TC egress of the node's uplink: egress decisions deferred past DNAT.
#[classifier]
pub fn node_egress(ctx: TcContext) -> i32 {
    node::run(&ctx)
}

/// Does nothing: the baseline that `classifier_bench` subtracts (the cost
/// of running any TC program through BPF_PROG_TEST_RUN). Never attached.
#[classifier]
pub fn noop(_ctx: TcContext) -> i32 {
    aya_ebpf::bindings::tcx_action_base::TCX_NEXT
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here.
    loop {}
}
