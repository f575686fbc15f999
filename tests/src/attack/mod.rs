//! Attacks on the datapath with real packets. A lab node holds three pods
//! (an attacker, a peer the policies trust, a victim) and an agent that
//! enforces a policy file; frames crafted with the classifier tests'
//! packet builder leave the attacker's namespace on an AF_PACKET socket,
//! and a capture counts the frames carrying the attack's marker where the
//! victim (a pod, or the node's own stack) receives them.
//!
//! Every attack sends a bounded number of frames and counts for a bounded
//! time; every test also runs a control (the same path under a policy
//! that allows it, or the same frames from their rightful sender) that
//! must deliver, so a broken sender or capture cannot pass for a blocked
//! attack.

mod flows;
pub mod policies;
mod socket;

pub use socket::{Capture, Wire};

use crate::classifier::packet::Packet;
use palisade_lab::{
    palisade_bin, write_manifest, AgentOptions, AgentProcess, Family, Lab, LabSpec, ProbePort,
    Protocol,
};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const NODE: &str = "node-1";
pub const ATTACKER: &str = "x/a";
pub const PEER: &str = "x/p";
pub const VICTIM: &str = "x/v";
/// The pod-side interface of every pod.
pub const POD_IFACE: &str = "eth0";

/// The pods (namespace `x`, label `pod: <name>`): name, IPv4, IPv6.
const PODS: [(&str, &str, &str); 3] = [
    ("a", "10.244.1.10", "fd00:10:244::110"),
    ("p", "10.244.1.11", "fd00:10:244::111"),
    ("v", "10.244.1.12", "fd00:10:244::112"),
];

/// The DNS-like flow policies allow (every pod echoes on it).
pub const DNS_PORT: u16 = 53;
/// Where crafted datagrams go: no pod listens there, so no server answers
/// them (two pods' echo servers answering each other would never stop).
pub const SINK_PORT: u16 = 9;

/// What every pod serves: TCP 80 (connections to keep open) and UDP 53.
const SERVED: [ProbePort; 2] = [
    ProbePort {
        port: 80,
        protocol: Protocol::Tcp,
    },
    ProbePort {
        port: DNS_PORT,
        protocol: Protocol::Udp,
    },
];

const AGENT_START: Duration = Duration::from_secs(60);
const AGENT_CHANGE: Duration = Duration::from_secs(20);
/// How long a capture keeps counting after the last frame was sent (one
/// hop through the node takes microseconds).
pub const SETTLE: Duration = Duration::from_millis(300);

fn pods_yaml() -> String {
    let mut docs = vec!["apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n".to_string()];
    for (name, v4, v6) in PODS {
        docs.push(format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: x, labels: {{pod: {name}}}}}
spec: {{nodeName: {NODE}, containers: [{{name: c, image: x}}]}}
status: {{phase: Running, podIP: {v4}, podIPs: [{{ip: {v4}}}, {{ip: '{v6}'}}]}}
"
        ));
    }
    docs.join("---\n")
}

/// A lab with the three pods, routed as Calico routes them, and an agent
/// enforcing a policy file. Field order is drop order: the agent's
/// process goes with the lab.
pub struct Arena {
    pub lab: Lab,
    agent: AgentProcess,
    manifests: PathBuf,
}

impl Arena {
    /// Brings the lab up and waits until the agent enforces `policies`.
    pub fn up(label: &str, policies: &str) -> Arena {
        let mut spec = LabSpec::new(label);
        for (name, v4, v6) in PODS {
            let ips: [IpAddr; 2] = [v4.parse().unwrap(), v6.parse().unwrap()];
            spec = spec.pod("x", name, &ips, &SERVED);
        }
        let lab = Lab::up(&spec).expect("lab up");
        let manifests = lab.dir().join("manifests");
        std::fs::create_dir(&manifests).unwrap();
        write_manifest(&manifests.join("pods.yaml"), &pods_yaml()).unwrap();
        write_manifest(&manifests.join("policies.yaml"), policies).unwrap();
        check_manifests(&manifests);
        let bin = palisade_bin().expect("the palisade binary");
        let bpffs = lab.mount_bpffs().unwrap();
        let opts = AgentOptions::new(bin, vec![manifests.clone()], NODE, bpffs);
        let agent = lab.start_agent(&opts).unwrap();
        lab.wait_agent(&agent, 0, AGENT_START).unwrap();
        Arena {
            lab,
            agent,
            manifests,
        }
    }

    /// Replaces the policies and waits until the agent enforces them.
    pub fn set_policies(&self, policies: &str) {
        let before = self.agent.rounds();
        write_manifest(&self.manifests.join("policies.yaml"), policies).unwrap();
        check_manifests(&self.manifests);
        self.lab
            .wait_agent(&self.agent, before, AGENT_CHANGE)
            .unwrap();
    }

    pub fn ip(&self, pod: &str, family: Family) -> IpAddr {
        self.lab.ip(pod, family).unwrap()
    }

    /// The agent's log, for failure messages.
    pub fn log(&self) -> String {
        self.lab.log(&self.agent.process)
    }

    /// A sender on `pod`'s interface, addressed to the node's side of it
    /// (the pods' gateway, IPv4 by proxy ARP and IPv6 as `fe80::1`).
    pub fn wire(&self, pod: &str) -> Wire {
        wire(&self.lab, pod)
    }

    /// A capture of the frames `pod` receives.
    pub fn capture(&self, pod: &str) -> Capture {
        self.lab
            .run_in_pod(pod, || Capture::link(POD_IFACE))
            .unwrap()
            .unwrap_or_else(|e| panic!("{pod}: {e}"))
    }

    /// A capture of the packets of these (family, IP protocol) pairs the
    /// node's own stack receives.
    pub fn capture_node(&self, protocols: &[(Family, u8)]) -> Capture {
        let mut taps = protocols.iter().map(|&(family, proto)| {
            self.lab
                .run_in_node(|| Capture::delivered(family, proto))
                .unwrap()
                .unwrap_or_else(|e| panic!("node: {e}"))
        });
        let first = taps.next().expect("at least one protocol");
        taps.fold(first, Capture::and)
    }

    /// Sends what `build` makes with a fresh marker from `from`'s
    /// interface and counts the frames carrying it at `capture`.
    pub fn attempt(
        &self,
        from: &str,
        capture: &Capture,
        build: impl FnOnce(&[u8]) -> Vec<Packet>,
    ) -> Tally {
        let marker = marker();
        let packets = build(&marker);
        let sent = self.wire(from).send(&packets).unwrap();
        let arrived = capture.count(&marker, SETTLE).unwrap();
        Tally { sent, arrived }
    }
}

/// A sender on `pod`'s interface in `lab`, addressed to the node's side of
/// it (the pods' gateway, IPv4 by proxy ARP and IPv6 as `fe80::1`).
pub fn wire(lab: &Lab, pod: &str) -> Wire {
    let p = lab.pod(pod).unwrap();
    let gateway = mac(&lab.node_netns(), &p.host_veth);
    let own = mac(&p.netns, POD_IFACE);
    lab.run_in_pod(pod, || Wire::open(POD_IFACE, gateway, own))
        .unwrap()
        .unwrap_or_else(|e| panic!("{pod}: {e}"))
}

/// Fails at once on a manifest the agent would read as something else
/// than the test means (a typo isolating a pod with nothing allowed would
/// make an attack look blocked).
fn check_manifests(dir: &std::path::Path) {
    let model = palisade_policy::load_paths(&[dir.to_path_buf()]);
    assert!(model.errors.is_empty(), "manifests: {:?}", model.errors);
}

/// The MAC address of `dev` in the network namespace `netns`.
pub fn mac(netns: &str, dev: &str) -> [u8; 6] {
    let out = crate::kernel::run("ip", &["-n", netns, "-j", "link", "show", "dev", dev]);
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    let text = links[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{netns}: {dev} has no MAC address: {out}"));
    parse_mac(text).unwrap_or_else(|| panic!("{netns}: {dev}: bad MAC address {text}"))
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect::<Option<_>>()?;
    bytes.try_into().ok()
}

/// 16 random bytes: what identifies one attack's frames in a capture.
pub fn marker() -> [u8; 16] {
    let mut m = [0u8; 16];
    // SAFETY: writes at most 16 bytes into `m`.
    let n = unsafe { libc::getrandom(m.as_mut_ptr().cast(), m.len(), 0) };
    assert_eq!(n, 16, "getrandom: {}", std::io::Error::last_os_error());
    m
}

/// Frames sent and frames that arrived.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: usize,
    pub arrived: usize,
}

/// Prints the figures of an attack in the one-line form reports collect.
pub fn report(name: &str, t: Tally) {
    eprintln!("attack {name}: sent {} arrived {}", t.sent, t.arrived);
}

/// Prints the figures of a control run.
pub fn report_control(name: &str, t: Tally) {
    eprintln!("control {name}: sent {} arrived {}", t.sent, t.arrived);
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn mac_addresses_parse() {
        assert_eq!(
            parse_mac("0e:fc:00:01:ab:04"),
            Some([0x0e, 0xfc, 0, 1, 0xab, 4])
        );
        assert_eq!(parse_mac("0e:fc:00:01:ab"), None);
        assert_eq!(parse_mac("zz:fc:00:01:ab:04"), None);
    }
}
