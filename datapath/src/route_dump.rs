//! The main routing table, read over netlink (an `RTM_GETROUTE` dump):
//! what `ip -j route show table main` prints, without starting a process.
//! Every round reads the routes; two `ip` processes per round were most of
//! the time from a new pod's route to its classifiers.

use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const NLMSG_HDR: usize = 16;
const RTMSG: usize = 12;

/// One route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination and prefix length; `None` for a default route.
    pub dst: Option<(IpAddr, u8)>,
    /// Output interface (none for a multipath route).
    pub oif: Option<u32>,
    /// Through a gateway (`via` included).
    pub gateway: bool,
    /// A unicast route (not local, broadcast, blackhole...).
    pub unicast: bool,
}

impl Route {
    /// A gateway-less unicast route to one address.
    pub fn host(&self) -> Option<IpAddr> {
        let (ip, len) = self.dst?;
        let full = if ip.is_ipv4() { 32 } else { 128 };
        (self.unicast && !self.gateway && len == full).then_some(ip)
    }
}

/// The routes of the main table of this network namespace, one family
/// (`libc::AF_INET` or `libc::AF_INET6`).
pub fn main_table(family: u8) -> Result<Vec<Route>> {
    let sock = super::sys::netlink_route(0)?;
    let mut req = [0u8; NLMSG_HDR + RTMSG];
    req[0..4].copy_from_slice(&((NLMSG_HDR + RTMSG) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[NLMSG_HDR] = family;
    // SAFETY: sends `req`, a buffer of its own length.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error()).context("send a route dump request");
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: receives into `buf`, writable for its length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error()).context("read the route dump");
        }
        if parse(&buf[..n as usize], &mut out)? {
            return Ok(out);
        }
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Adds the routes of one datagram of the dump to `out`; true at its end.
fn parse(mut b: &[u8], out: &mut Vec<Route>) -> Result<bool> {
    while b.len() >= NLMSG_HDR {
        let len = u32_at(b, 0) as usize;
        if len < NLMSG_HDR || len > b.len() {
            bail!("truncated netlink message in the route dump");
        }
        match u16_at(b, 4) {
            NLMSG_DONE => return Ok(true),
            NLMSG_ERROR => {
                let errno = if len >= NLMSG_HDR + 4 {
                    -(u32_at(b, NLMSG_HDR) as i32)
                } else {
                    0
                };
                bail!(
                    "route dump refused: {}",
                    std::io::Error::from_raw_os_error(errno)
                );
            }
            RTM_NEWROUTE => out.extend(route(&b[NLMSG_HDR..len])),
            _ => {}
        }
        b = &b[len.next_multiple_of(4).min(b.len())..];
    }
    Ok(false)
}

/// One `rtmsg` and its attributes; `None` outside the main table.
fn route(m: &[u8]) -> Option<Route> {
    if m.len() < RTMSG {
        return None;
    }
    let (family, dst_len, mut table, kind) = (m[0], m[1], u32::from(m[4]), m[7]);
    let mut r = Route {
        dst: None,
        oif: None,
        gateway: false,
        unicast: kind == RTN_UNICAST,
    };
    let mut attrs = &m[RTMSG..];
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0));
        if len < 4 || len > attrs.len() {
            break;
        }
        let data = &attrs[4..len];
        match u16_at(attrs, 2) {
            RTA_DST => r.dst = addr(family, data).map(|ip| (ip, dst_len)),
            RTA_OIF if data.len() >= 4 => r.oif = Some(u32_at(data, 0)),
            RTA_GATEWAY | RTA_VIA => r.gateway = true,
            RTA_TABLE if data.len() >= 4 => table = u32_at(data, 0),
            _ => {}
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    (table == RT_TABLE_MAIN).then_some(r)
}

fn addr(family: u8, data: &[u8]) -> Option<IpAddr> {
    match (i32::from(family), data.len()) {
        (libc::AF_INET, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            data[0], data[1], data[2], data[3],
        ))),
        (libc::AF_INET6, 16) => {
            let octets: [u8; 16] = data.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    }
}
