//! Where the classifiers find an endpoint record (`ENDPOINT_CELLS`,
//! `docs/maps.md`), through BPF_PROG_TEST_RUN (root required): the fast
//! path reads the cell of the interface when it names the interface, else
//! `ENDPOINTS`. The writer keeps the two equal; these tests make them
//! differ on purpose, so that each verdict shows which one was read. The
//! packets are new TCP flows, which the fast path decides (a deny-all or
//! pending record would send them to the general path, which reads
//! `ENDPOINTS` alone): "closed" is a record isolated both ways with no
//! policy.

use std::net::IpAddr;

use anyhow::Result;
use palisade_common::*;
use palisade_tests::classifier::{
    packet::Packet, pod_endpoint, Classifier, Hook, IFINDEX, TCX_DROP, TCX_NEXT,
};

const POD: &str = "10.0.0.1";
const PEER: &str = "10.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A record of the pod with `flags` (no policy maps).
fn record(flags: u32) -> Endpoint {
    pod_endpoint(flags, &[ip(POD)])
}

/// The verdicts of a new flow into the pod and out of it, each its own
/// flow (new source ports), so that no conntrack entry decides them.
fn verdicts(c: &Classifier, port: u16) -> (u32, u32) {
    let into = Packet::tcp(ip(PEER), ip(POD), port, 80).build();
    let out = Packet::tcp(ip(POD), ip(PEER), port, 80).build();
    (
        c.run(Hook::Ingress, &into).expect("ingress run"),
        c.run(Hook::Egress, &out).expect("egress run"),
    )
}

const PASSED: (u32, u32) = (TCX_NEXT, TCX_NEXT);
const DROPPED: (u32, u32) = (TCX_DROP, TCX_DROP);

/// Isolated both ways, no policy: the fast path refuses every new flow.
const CLOSED: u32 = EP_ISOLATED_INGRESS | EP_ISOLATED_EGRESS;

#[test]
fn cells_the_cell_of_the_interface_is_read_before_endpoints() -> Result<()> {
    let mut c = Classifier::load()?;
    c.set_endpoint(IFINDEX, &record(CLOSED))?;
    assert_eq!(verdicts(&c, 1000), DROPPED, "record and cell agree");
    // The cell alone says otherwise: the cell decides.
    c.set_cell(IFINDEX, &record(0))?;
    assert_eq!(verdicts(&c, 1001), PASSED, "the cell's record");
    // An emptied cell leaves the record of ENDPOINTS.
    c.clear_cell(IFINDEX)?;
    assert_eq!(verdicts(&c, 1002), DROPPED, "ENDPOINTS' record");
    Ok(())
}

#[test]
fn cells_a_cell_naming_another_interface_is_passed_over() -> Result<()> {
    let mut c = Classifier::load()?;
    c.set_endpoint(IFINDEX, &record(0))?;
    // The interface that shares IFINDEX's cell holds it, with a record
    // that drops everything: IFINDEX's packets still read their own.
    let sharer = IFINDEX + ENDPOINT_CELLS_MAX;
    c.set_cell(sharer, &record(CLOSED))?;
    assert_eq!(verdicts(&c, 2000), PASSED);
    // The same record in the cell naming IFINDEX drops: the pass above
    // was the comparison of interfaces, not a cell ignored.
    c.set_cell(IFINDEX, &record(CLOSED))?;
    assert_eq!(verdicts(&c, 2001), DROPPED);
    Ok(())
}

#[test]
fn cells_follow_every_record_the_harness_writes_and_removes() -> Result<()> {
    let mut c = Classifier::load()?;
    c.set_endpoint(IFINDEX, &record(CLOSED))?;
    c.set_endpoint(IFINDEX, &record(0))?;
    assert_eq!(verdicts(&c, 3000), PASSED, "the newer record");
    // Removed from both: no record at all fails closed (the general path
    // drops). A cell left behind would still pass.
    c.remove_endpoint(IFINDEX)?;
    assert_eq!(verdicts(&c, 3001), DROPPED);
    Ok(())
}
