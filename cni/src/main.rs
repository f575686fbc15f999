//! The `palisade-cni` binary: `install` and `uninstall` for the DaemonSet,
//! and otherwise the CNI plugin itself, as a container runtime runs it.

use palisade_cni::kernel::{KernelHolder, Target};
use palisade_cni::Holder;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let admin = match args.first().map(String::as_str) {
        Some("install") => palisade_cni::install::install_main(&args[1..]),
        Some("uninstall") => palisade_cni::install::uninstall_main(&args[1..]),
        _ => {
            let code = palisade_cni::main_with(&|config: &[u8]| -> Box<dyn Holder> {
                Box::new(KernelHolder::new(Target::from_config(config)))
            });
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
    };
    match admin {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-cni: {e:#}");
            ExitCode::FAILURE
        }
    }
}
