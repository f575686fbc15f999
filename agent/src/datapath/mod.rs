//! The kernel half as seen from userspace: loading the classifiers, pinning,
//! attaching to pod interfaces, and writing compiled map contents.

/// The classifiers' object, embedded at build time (empty when the agent was
/// built before `cargo xtask build-ebpf`).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/palisade-ebpf.o"));

/// The embedded object, or a clear error when it is missing.
pub fn ebpf_object() -> anyhow::Result<&'static [u8]> {
    if EBPF_OBJECT.is_empty() {
        anyhow::bail!("this palisade binary was built without its eBPF object: run `cargo xtask build-ebpf`, then rebuild");
    }
    Ok(EBPF_OBJECT)
}
