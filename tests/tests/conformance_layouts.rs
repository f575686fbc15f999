//! The upstream conformance scenarios on the layouts real clusters use,
//! beside the routed single-node sweep of `lab_enforcement.rs`: pods wired
//! by the reference `bridge` plugin (flannel, minikube) on one node and on
//! two, by `ptp` (kindnet) on one node and across a VXLAN overlay
//! (flannel's vxlan backend), and the routed layout across two nodes; `palisade-cni`
//! chained on the plugin layouts. Every scenario's measured matrix must be
//! the oracle's.
//!
//! Needs `palisade` and `palisade-cni` (`cargo xtask build`).

use palisade_lab::{CniLayout, Overlay};
use palisade_tests::sweep::{run_shard, Sweep};

/// The standard topology's namespaces on one node, or split over two (x on
/// one, y and z on the other: every scenario has local and remote peers,
/// and the bridge layout's per-node subnets stay apart).
const ONE: &[(&str, &[&str])] = &[("node-1", &["x", "y", "z"])];
const TWO: &[(&str, &[&str])] = &[("node-1", &["x"]), ("node-2", &["y", "z"])];

fn sweep(
    label: &str,
    layout: CniLayout,
    overlay: Overlay,
    nodes: &[(&str, &[&str])],
    shard: usize,
) {
    let mut s = Sweep::up(label, layout, overlay, nodes);
    run_shard(&mut s, shard, 2);
}

#[test]
fn conformance_bridge_one_node_shard_0() {
    sweep("conf_bridge1_0", CniLayout::Bridge, Overlay::None, ONE, 0);
}

#[test]
fn conformance_bridge_one_node_shard_1() {
    sweep("conf_bridge1_1", CniLayout::Bridge, Overlay::None, ONE, 1);
}

#[test]
fn conformance_ptp_one_node_shard_0() {
    sweep("conf_ptp1_0", CniLayout::Ptp, Overlay::None, ONE, 0);
}

#[test]
fn conformance_ptp_one_node_shard_1() {
    sweep("conf_ptp1_1", CniLayout::Ptp, Overlay::None, ONE, 1);
}

#[test]
fn conformance_bridge_two_nodes_shard_0() {
    sweep("conf_bridge2_0", CniLayout::Bridge, Overlay::None, TWO, 0);
}

#[test]
fn conformance_bridge_two_nodes_shard_1() {
    sweep("conf_bridge2_1", CniLayout::Bridge, Overlay::None, TWO, 1);
}

#[test]
fn conformance_ptp_vxlan_two_nodes_shard_0() {
    sweep("conf_ptpvx_0", CniLayout::Ptp, Overlay::Vxlan, TWO, 0);
}

#[test]
fn conformance_ptp_vxlan_two_nodes_shard_1() {
    sweep("conf_ptpvx_1", CniLayout::Ptp, Overlay::Vxlan, TWO, 1);
}

#[test]
fn conformance_routed_two_nodes_shard_0() {
    sweep("conf_routed2_0", CniLayout::Routed, Overlay::None, TWO, 0);
}

#[test]
fn conformance_routed_two_nodes_shard_1() {
    sweep("conf_routed2_1", CniLayout::Routed, Overlay::None, TWO, 1);
}
