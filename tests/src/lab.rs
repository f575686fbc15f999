//! What the lab tests share.

use crate::kernel::Scratch;
use palisade_lab::{palisade_cni_bin, ChainedPlugin, CniLayout, LabSpec, ProbePort, Protocol};

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

/// Sends 4-byte messages over `conn` every 20 ms until `stop` (at least 10,
/// at most `max`), checking every echo; the number echoed, or what broke
/// (`flow` names the connection in the message).
pub fn echo_until(
    mut conn: std::net::TcpStream,
    flow: &str,
    stop: &std::sync::atomic::AtomicBool,
    max: u32,
) -> Result<u32, String> {
    use std::io::{Read, Write};
    use std::time::Duration;
    conn.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| format!("{flow}: {e}"))?;
    conn.set_nodelay(true).map_err(|e| format!("{flow}: {e}"))?;
    let mut n = 0;
    while n < max && (n < 10 || !stop.load(std::sync::atomic::Ordering::Relaxed)) {
        let msg = n.to_be_bytes();
        conn.write_all(&msg)
            .map_err(|e| format!("{flow}: message {n}: send: {e}"))?;
        let mut back = [0u8; 4];
        conn.read_exact(&mut back)
            .map_err(|e| format!("{flow}: message {n}: no echo: {e}"))?;
        if back != msg {
            return Err(format!("{flow}: message {n}: echo {back:?} != {msg:?}"));
        }
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(n)
}

/// TCP segments retransmitted so far in the namespace of the calling
/// thread (`RetransSegs` of `/proc/thread-self/net/snmp`).
pub fn retransmitted_segments() -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "RetransSegs")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// TCP segments retransmitted so far in `pod`: how TCP hides a dropped
/// segment from the application.
pub fn retrans_in(lab: &palisade_lab::Lab, pod: &str) -> u64 {
    lab.run_in_pod(pod, retransmitted_segments).unwrap()
}

/// `spec` wired by `layout`. On the plugin layouts `palisade-cni` is
/// chained, holding every pod from its creation, with its records and pins
/// in `scratch` (whose bpffs is then the agent's `--bpffs-root` too); the
/// agent's extra arguments say where the records are.
pub fn wired(
    spec: LabSpec,
    layout: CniLayout,
    scratch: &Scratch,
    node: &str,
) -> (LabSpec, Vec<String>) {
    let spec = spec.cni(layout);
    if layout == CniLayout::Routed {
        return (spec, Vec::new());
    }
    let (plugin, args) = cni_plugin(scratch, node);
    (spec.chain(vec![plugin]), args)
}

/// `palisade-cni` chained for `node`, with its records and pins in
/// `scratch`, and the agent arguments that read those records.
pub fn cni_plugin(scratch: &Scratch, node: &str) -> (ChainedPlugin, Vec<String>) {
    let state = scratch.dir().join("cni-state");
    let plugin = ChainedPlugin::new(palisade_cni_bin().expect("palisade-cni"))
        .with("stateDir", state.to_str().unwrap().into())
        .with("bpffsRoot", scratch.bpffs().to_str().unwrap().into())
        .with("nodeName", node.into());
    let args = vec!["--cni-state-dir".into(), state.to_str().unwrap().into()];
    (plugin, args)
}
