//! A small tmpfs standing for the disk under `/run/palisade`: mounted by
//! the test (in its own, the host's, mount namespace, under the test's
//! scratch directory), filled to the last byte and inode on demand, and
//! unmounted on drop.

use crate::kernel::run;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs of 256 KiB and 64 inodes.
pub struct Tmpfs {
    dir: PathBuf,
    fillers: std::sync::Mutex<Vec<PathBuf>>,
}

impl Tmpfs {
    pub fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                "size=256k,nr_inodes=64,mode=0755",
                "tmpfs",
                dir.to_str().unwrap(),
            ],
        );
        Tmpfs {
            dir: dir.to_path_buf(),
            fillers: Default::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes every byte (one file, written until ENOSPC) and every inode
    /// (empty files until ENOSPC) left.
    pub fn fill(&self) {
        let mut fillers = self.fillers.lock().unwrap();
        let big = self.dir.join("filler-bytes");
        let mut f = std::fs::File::create(&big).expect("room for the filler");
        let chunk = [0u8; 4096];
        // Bounded by the size of the filesystem.
        while f.write_all(&chunk).is_ok() {}
        fillers.push(big);
        for k in 0..1024 {
            let p = self.dir.join(format!("filler-{k}"));
            if std::fs::File::create(&p).is_err() {
                break;
            }
            fillers.push(p);
        }
        assert!(
            std::fs::File::create(self.dir.join("one-more")).is_err(),
            "still room"
        );
    }

    /// Gives the room back.
    pub fn free(&self) {
        for p in self.fillers.lock().unwrap().drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .status();
    }
}
