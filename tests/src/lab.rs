//! What the lab tests share.

use palisade_lab::{ProbePort, Protocol};

/// The ports every lab pod serves and every matrix probes: TCP 80 and 81
/// (a rule naming one port must leave the other alone), UDP 80 and SCTP 80
/// (rules are per protocol).
pub const PORTS: [ProbePort; 4] = [
    ProbePort {
        port: 80,
        protocol: Protocol::Tcp,
    },
    ProbePort {
        port: 81,
        protocol: Protocol::Tcp,
    },
    ProbePort {
        port: 80,
        protocol: Protocol::Udp,
    },
    ProbePort {
        port: 80,
        protocol: Protocol::Sctp,
    },
];
