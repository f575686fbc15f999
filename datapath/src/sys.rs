//! The few kernel calls aya 0.14 does not expose: checking and mounting a
//! bpf filesystem, and reading a pinned TCX link's target interface (aya's
//! `LinkInfo` keeps the `tcx` part of `bpf_link_info` private, and we need it
//! to tell a live link from one whose interface is gone).

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `BPF_FS_MAGIC` from `linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))
}

/// Whether `path` lies on a bpf filesystem.
pub fn is_bpffs(path: &Path) -> Result<bool> {
    let c = cpath(path)?;
    // SAFETY: statfs writes into the zeroed struct we own; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    #[allow(clippy::unnecessary_cast)]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts a fresh bpf filesystem on `dir` (which must exist).
pub fn mount_bpffs(dir: &Path) -> Result<()> {
    let target = cpath(dir)?;
    let fstype = CString::new("bpf").expect("static string");
    // SAFETY: all pointers are valid C strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mount -t bpf bpf {}", dir.display()));
    }
    Ok(())
}

/// Opens a pinned bpf object.
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    #[repr(C)]
    struct ObjGetAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        // Explicit: the kernel rejects non-zero bytes after the last field.
        _pad: u32,
    }
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: the attr struct is a valid prefix of `union bpf_attr` for BPF_OBJ_GET.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr as *const ObjGetAttr,
            std::mem::size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a fresh fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

/// Number of keys of a pinned map whose keys are `key_size` bytes, whatever
/// their type (a map of another layout version), visiting at most `limit`.
pub fn count_keys(path: &Path, key_size: usize, limit: usize) -> Result<usize> {
    #[repr(C)]
    struct NextKeyAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
    }
    let fd = obj_get(path).with_context(|| format!("open pinned map {}", path.display()))?;
    let (mut key, mut next) = (vec![0u8; key_size], vec![0u8; key_size]);
    let mut n = 0;
    while n < limit {
        let attr = NextKeyAttr {
            map_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
            _pad: 0,
            // No key asks for the first one.
            key: if n == 0 { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: both buffers are `key_size` bytes, the map's key size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKeyAttr,
                std::mem::size_of::<NextKeyAttr>(),
            )
        };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(e).with_context(|| format!("iterate {}", path.display()));
        }
        std::mem::swap(&mut key, &mut next);
        n += 1;
    }
    Ok(n)
}

/// What a TCX link is attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcxLinkInfo {
    pub link_id: u32,
    pub prog_id: u32,
    /// 0 once the interface is gone (the link is defunct).
    pub ifindex: u32,
    pub attach_type: u32,
}

/// `BPF_LINK_TYPE_TCX`.
const BPF_LINK_TYPE_TCX: u32 = 11;

/// Reads the TCX part of a pinned link's `bpf_link_info`.
pub fn tcx_link_info(path: &Path) -> Result<TcxLinkInfo> {
    // bpf_link_info: type, id, prog_id, then a union aligned to 8 whose
    // `tcx` member is { ifindex, attach_type }.
    #[repr(C)]
    #[derive(Default)]
    struct RawLinkInfo {
        type_: u32,
        id: u32,
        prog_id: u32,
        _pad: u32,
        ifindex: u32,
        attach_type: u32,
        _rest: [u64; 8],
    }
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let fd = obj_get(path).with_context(|| format!("open pinned link {}", path.display()))?;
    let mut info = RawLinkInfo::default();
    let attr = InfoAttr {
        bpf_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
        info_len: std::mem::size_of::<RawLinkInfo>() as u32,
        info: &mut info as *mut RawLinkInfo as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("link info of {}", path.display()));
    }
    if info.type_ != BPF_LINK_TYPE_TCX {
        bail!(
            "pinned link {} is of type {}, not a TCX link",
            path.display(),
            info.type_
        );
    }
    Ok(TcxLinkInfo {
        link_id: info.id,
        prog_id: info.prog_id,
        ifindex: info.ifindex,
        attach_type: info.attach_type,
    })
}

/// Interface name of an ifindex in the current network namespace.
pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr() as *mut libc::c_char) };
    if p.is_null() {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// A netlink route socket of the current network namespace (`flags`:
/// extra socket flags such as `SOCK_NONBLOCK`).
pub fn netlink_route(flags: libc::c_int) -> Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned right away.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | flags,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("open a netlink route socket");
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// Every interface of the current network namespace: (ifindex, name).
pub fn interfaces() -> Vec<(u32, String)> {
    // SAFETY: if_nameindex returns an array ended by a zero entry, or
    // null; it is freed once read.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut p = list;
        while (*p).if_index != 0 && !(*p).if_name.is_null() {
            let name = std::ffi::CStr::from_ptr((*p).if_name);
            out.push(((*p).if_index, name.to_string_lossy().into_owned()));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        out
    }
}

/// The driver of an interface (`veth`, `netkit`, `vxlan`, `virtio_net`,
/// ...), from the `ETHTOOL_GDRVINFO` ioctl: no subprocess. `None` when
/// the interface is gone or its driver does not say.
pub fn driver(ifname: &str) -> Option<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 4 * 5],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IF_NAMESIZE],
        data: *mut DrvInfo,
        _pad: [u8; 16],
    }
    if ifname.len() >= libc::IF_NAMESIZE {
        return None;
    }
    let mut info = DrvInfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        rest: [0; 32 * 4 + 12 + 4 * 5],
    };
    let mut req = IfReq {
        name: [0; libc::IF_NAMESIZE],
        data: &mut info,
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket creation; the fd is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return None;
    }
    // SAFETY: `raw` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `req` names the interface and points at a drvinfo buffer of
    // the size the kernel fills, both alive for the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc != 0 {
        return None;
    }
    let len = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..len]).into_owned())
}

/// Ifindex of an interface name in the current network namespace.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// An exclusive `flock` on a directory, released when dropped (or when the
/// process dies, however it dies).
#[derive(Debug)]
pub struct DirLock {
    _fd: OwnedFd,
}

impl DirLock {
    /// Takes the lock if it is free now; None while another process holds
    /// it.
    pub fn try_acquire(dir: &Path) -> Result<Option<DirLock>> {
        let fd: OwnedFd = std::fs::File::open(dir)
            .with_context(|| format!("open {}", dir.display()))?
            .into();
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe {
            libc::flock(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                libc::LOCK_EX | libc::LOCK_NB,
            )
        };
        if rc == 0 {
            return Ok(Some(DirLock { _fd: fd }));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(None);
        }
        Err(err).with_context(|| format!("lock {}", dir.display()))
    }

    /// Takes the lock, retrying for up to `wait`.
    pub fn acquire(dir: &Path, wait: std::time::Duration) -> Result<DirLock> {
        let fd: OwnedFd = std::fs::File::open(dir)
            .with_context(|| format!("open {}", dir.display()))?
            .into();
        let deadline = std::time::Instant::now() + wait;
        let mut logged = false;
        loop {
            // SAFETY: flock on a descriptor we own.
            let rc = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if rc == 0 {
                return Ok(DirLock { _fd: fd });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::WouldBlock {
                return Err(err).with_context(|| format!("lock {}", dir.display()));
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "another palisade agent holds {} (waited {wait:?})",
                    dir.display()
                );
            }
            if !logged {
                tracing::warn!(dir = %dir.display(), "another agent holds this node's pins; waiting");
                logged = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// `BPF_MAP_DELETE_ELEM` of an array of maps' `index` (aya 0.14's
/// `ArrayOfMaps` has no delete); an empty slot is not an error.
pub fn delete_index(map_fd: i32, index: u32) -> std::io::Result<()> {
    #[repr(C)]
    struct DeleteAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
    }
    let attr = DeleteAttr {
        map_fd: map_fd as u32,
        _pad: 0,
        key: &index as *const u32 as u64,
    };
    // SAFETY: the attr struct is a valid prefix of `union bpf_attr` for
    // BPF_MAP_DELETE_ELEM, and the key outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &attr as *const DeleteAttr,
            std::mem::size_of::<DeleteAttr>(),
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_second_lock_on_a_directory_waits_then_fails() {
        let dir = std::env::temp_dir().join(format!("palisade-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = DirLock::acquire(&dir, Duration::ZERO).expect("first lock");
        let err =
            DirLock::acquire(&dir, Duration::from_millis(150)).expect_err("second lock must fail");
        assert!(
            format!("{err:#}").contains("another palisade agent"),
            "{err:#}"
        );
        drop(first);
        DirLock::acquire(&dir, Duration::ZERO).expect("lock again once released");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
