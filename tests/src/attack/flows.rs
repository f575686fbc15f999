//! Real connections the attacks start from: flows a policy allowed, whose
//! addresses and ports the forged packets then borrow.

use super::{Arena, DNS_PORT};
use palisade_lab::Family;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

impl Arena {
    /// A UDP socket of `pod`, bound to a port of its own choosing in
    /// `family`; kept open, it keeps that port the pod's.
    pub fn udp_socket(&self, pod: &str, family: Family) -> (UdpSocket, u16) {
        let any = family.unspecified();
        let bound = self.lab.run_in_pod(pod, || {
            let s = UdpSocket::bind((any, 0))?;
            let port = s.local_addr()?.port();
            Ok::<_, std::io::Error>((s, port))
        });
        bound
            .unwrap()
            .unwrap_or_else(|e| panic!("{pod}: UDP socket: {e}"))
    }

    /// A UDP exchange from `from` to `to`'s echo server on `DNS_PORT`,
    /// answered: a flow the datapath has allowed. Returns the socket (keep
    /// it: its port stays `from`'s) and that port.
    pub fn udp_flow(&self, from: &str, to: &str, family: Family) -> (UdpSocket, u16) {
        let (s, port) = self.udp_socket(from, family);
        let dst = (self.ip(to, family), DNS_PORT);
        let answered = (|| {
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.send_to(b"q", dst)?;
            s.recv(&mut [0u8; 8])
        })();
        if let Err(e) = answered {
            panic!(
                "{family:?} {from} -> {to}:{DNS_PORT}/UDP: {e}\n{}",
                self.log()
            );
        }
        (s, port)
    }

    /// A TCP connection from `from` to `to`'s echo server on port 80, one
    /// byte echoed. Returns the stream (keep it open) and `from`'s port.
    pub fn connect(&self, from: &str, to: &str, family: Family) -> (TcpStream, u16) {
        let dst = SocketAddr::from((self.ip(to, family), 80));
        let conn = self.lab.run_in_pod(from, || {
            let mut c = TcpStream::connect_timeout(&dst, Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(2)))?;
            c.write_all(b"k")?;
            c.read_exact(&mut [0u8; 1])?;
            let port = c.local_addr()?.port();
            Ok::<_, std::io::Error>((c, port))
        });
        conn.unwrap()
            .unwrap_or_else(|e| panic!("{from} -> {dst}: {e}\n{}", self.log()))
    }
}
