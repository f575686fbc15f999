//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
//!
//! The object is optional at build time so that the policy crates and the
//! offline CLI build without the eBPF toolchain; `datapath` reports a clear
//! error at run time when the binary was built without it.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = std::env::var("PALISADE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            manifest.join("../ebpf/target/bpfel-unknown-none/release/palisade-ebpf")
        });
    println!("cargo:rerun-if-env-changed=PALISADE_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("palisade-ebpf.o");
    let bytes = std::fs::read(&object).unwrap_or_default();
    std::fs::write(&out, bytes).expect("write embedded eBPF object");
}
