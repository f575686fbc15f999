//! Who may connect to the monitor socket: root and one group the operator
//! names (`--monitor-group`), nobody else. The stream shows every flow of
//! every pod of the node, and a client switches allowed-flow events on
//! node-wide, so it is not for every local user.

use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The socket's mode: read and write (connect) for its owner, root, and
/// its group.
pub const SOCKET_MODE: u32 = 0o660;

/// `--monitor-group`: a group name (resolved when parsed, in the agent's
/// own `/etc/group`: the image's, in a container) or a numeric GID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MonitorGroup {
    pub gid: u32,
}

impl std::str::FromStr for MonitorGroup {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            let gid = s
                .parse()
                .map_err(|_| format!("--monitor-group {s}: not a valid GID"))?;
            return Ok(MonitorGroup { gid });
        }
        gid_of(s)
            .map(|gid| MonitorGroup { gid })
            .map_err(|e| format!("{e:#}"))
    }
}

/// The GID of group `name`, from the system's group database.
fn gid_of(name: &str) -> Result<u32> {
    let c = CString::new(name).with_context(|| format!("--monitor-group {name:?}"))?;
    // SAFETY: zeroed `group` and a buffer we own are what getgrnam_r fills;
    // `result` points into them only while they live, and we read only
    // `gr_gid` (a plain integer) before they go.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    let mut result: *mut libc::group = std::ptr::null_mut();
    let rc = unsafe {
        libc::getgrnam_r(
            c.as_ptr(),
            &mut group,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("--monitor-group {name}: look up the group"));
    }
    if result.is_null() {
        bail!("--monitor-group {name}: no such group here (in a container, give the numeric GID)");
    }
    Ok(group.gr_gid)
}

/// Gives the socket file at `path` to root and `group` (root's group
/// without one) with [`SOCKET_MODE`].
pub fn restrict(path: &Path, group: Option<&MonitorGroup>) -> Result<()> {
    let gid = group.map_or(0, |g| g.gid);
    std::os::unix::fs::chown(path, Some(0), Some(gid))
        .with_context(|| format!("chown 0:{gid} {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE))
        .with_context(|| format!("chmod {SOCKET_MODE:o} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_number_or_by_name() {
        let g = |s: &str| s.parse::<MonitorGroup>();
        assert_eq!(g("4242"), Ok(MonitorGroup { gid: 4242 }));
        // Every system has a root group, GID 0.
        assert_eq!(g("root"), Ok(MonitorGroup { gid: 0 }));
        let err = g("no-such-group-here").unwrap_err();
        assert!(err.contains("no such group here"), "{err}");
        assert!(g("99999999999").unwrap_err().contains("not a valid GID"));
    }
}
