//! `palisade-cni`: a chained CNI plugin that holds every new pod interface
//! pending until the Palisade agent enforces the pod's NetworkPolicy.
//!
//! # What it does
//!
//! The plugin runs last in the node's network configuration list, after
//! the plugin that creates the pod's interface (flannel, Calico, kindnet's
//! `ptp`, `bridge`, ...). On `ADD` it reads `prevResult`, finds the pod's
//! host-side veth (the peer of the container interface `CNI_IFNAME`; a
//! bridge is never taken, and when the result lists no host interface the
//! peer is found from inside the pod's namespace), writes an attachment
//! record, then holds the interface pending: fail-closed classifiers that
//! drop the pod's traffic until the agent has programmed its policy, agent
//! running or not. It prints `prevResult` unchanged (with the request's
//! `cniVersion`).
//!
//! `DEL` releases the interface and removes the record; it succeeds when
//! nothing is recorded, so it can be repeated. `CHECK` verifies the record
//! against `prevResult` and asks the holder whether the interface is still
//! held or enforced. `GC` (spec 1.1) releases and removes this network's
//! records whose attachment is not in `cni.dev/valid-attachments`.
//! `STATUS` reports ready when the state directory is usable. `VERSION`
//! lists the supported spec versions: 0.3.0 to 1.1.0. Older ones have no
//! chaining, hence no `prevResult`; 0.3.x stays because flannel, Calico
//! and kindnet still ship their lists with 0.3.1.
//!
//! # Configuration
//!
//! The plugin entry in the configuration list:
//!
//! ```json
//! { "type": "palisade-cni", "stateDir": "/run/palisade/cni", "logLevel": "warn" }
//! ```
//!
//! - `stateDir` (optional, absolute path; default `/run/palisade/cni`):
//!   where attachment records go. The agent reads the same directory.
//! - `logLevel` (optional: `error`, `warn` (default), `info`, `debug`):
//!   what the plugin writes to stderr, which runtimes log.
//!
//! # Records
//!
//! One JSON file per attachment, `<stateDir>/<containerId>-<ifname>.json`,
//! replaced atomically (written to a temporary file and renamed):
//!
//! ```json
//! {
//!   "version": 1,
//!   "network": "cbr0",
//!   "containerId": "6f3c...",
//!   "ifname": "eth0",
//!   "netns": "/var/run/netns/cni-1234",
//!   "podNamespace": "shop",
//!   "podName": "api-7d9f",
//!   "podUid": "0b6e...",
//!   "hostInterface": "veth5a1c2b3d",
//!   "hostIfindex": 12,
//!   "ips": ["10.244.1.7/24", "fd00:10:244:1::7/64"],
//!   "created": "2025-06-01T12:00:00Z"
//! }
//! ```
//!
//! The `pod*` keys are present when the runtime passes them in `CNI_ARGS`.
//! The agent lists this directory to learn pod interfaces where the CNI
//! installs no per-pod host routes (bridge layouts). Files are 0644 and the
//! directory 0755: they hold nothing that `ip link` and the API server do
//! not already show, and readers need no privileges.
//!
//! # Install and uninstall
//!
//! [`install::install`] copies the binary into the CNI bin directory
//! (default `/opt/cni/bin`), then appends the plugin entry as the last
//! plugin of the configuration the runtime uses: the lexically first
//! `*.conf`, `*.conflist` or `*.json` in the configuration directory
//! (default `/etc/cni/net.d`), as containerd and CRI-O choose it. A
//! single-plugin file is converted into a `.conflist` of the same stem.
//! Running it again changes nothing; an existing entry is updated in place
//! and moved to the end. Files are replaced atomically with their mode
//! kept, and the original is kept beside them as a hidden
//! `.<name>.palisade-orig` that runtimes do not load.
//!
//! [`install::uninstall`] removes the entry; when nothing else changed
//! since install, the original file comes back byte for byte. The binary
//! stays, because runtimes may replay the cached configuration when they
//! delete pods created while the plugin was installed.
//!
//! # Failure behaviour
//!
//! Errors are the spec's error object on stdout with exit code 1: code 1
//! (unsupported version), 4 (invalid `CNI_*` variables), 6 (stdin is not
//! JSON), 7 (invalid configuration, including a missing `prevResult` on
//! `ADD`: the plugin only runs chained), 50 (`STATUS`: not available), and
//! the plugin's own codes from 100 (see [`error::code`]). `ADD` fails
//! closed: if the host interface cannot be found or held, it fails and
//! removes the record, and the runtime tears the pod down rather than
//! start it unprotected. A failed release fails `DEL` and keeps the record
//! so that the runtime's retry finishes the job.

pub mod config;
pub mod env;
pub mod error;
pub mod holder;
pub mod hostif;
pub mod install;
pub mod json;
pub mod kernel;
pub mod links;
pub mod plugin;
pub mod record;
pub mod result;
mod time;

use std::io::{Read, Write};

pub use env::Env;
pub use error::CniError;
pub use holder::Holder;
pub use plugin::{run, run_with, Outcome};
pub use record::{Record, RecordStore};

/// The plugin's entry point: reads the process's `CNI_*` variables and
/// stdin, runs the command with the holder `holder_for` makes from the
/// network config (where the holder finds the node's pins), writes stdout
/// and stderr, and returns the exit code.
pub fn main_with(holder_for: &dyn Fn(&[u8]) -> Box<dyn Holder>) -> i32 {
    let env = Env::from_process();
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&env, &stdin, holder_for(&stdin).as_ref()),
        Err(e) => Outcome {
            stdout: CniError::new(error::code::IO_FAILURE, "cannot read stdin", e.to_string())
                .to_json(config::LATEST_VERSION),
            stderr: Vec::new(),
            exit_code: 1,
        },
    };
    let _ = std::io::stderr().write_all(&outcome.stderr);
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&outcome.stdout).and_then(|()| out.flush());
    outcome.exit_code
}
