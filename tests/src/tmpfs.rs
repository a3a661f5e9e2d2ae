//! A size-limited tmpfs mounted on a temp dir, for the tests that need a disk that fills up
//! (the file sink on a full disk, the store on a full disk).
//!
//! Mounting needs root (CAP_SYS_ADMIN), which the test command has on the project's machines
//! and in CI; elsewhere the test fails with a message that says so. The mount is removed when
//! the value is dropped (lazily, so a process still holding a file there does not keep it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size, unmounted on drop.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it: "600k", "24m") on a new temp dir.
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount (util-linux): {e}"));
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs needs root (CAP_SYS_ADMIN); run the test command as root \
             as CI does: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path inside the mount.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file of zeroes of `bytes` bytes (or as much as fits), to fill the disk.
    pub fn fill(&self, name: &str, bytes: usize) -> PathBuf {
        let path = self.join(name);
        let _ = std::fs::write(&path, vec![0u8; bytes]);
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
