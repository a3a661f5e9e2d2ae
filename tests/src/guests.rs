//! The JavaScript and Python example plugins, built by their own build scripts (with npm's
//! componentize-js and PyPI's componentize-py) the first time a test needs them.
//!
//! Their toolchains are not Rust's, so `build.rs` does not build them: a machine without Node
//! or Python still builds and runs every other test, and the tests that need them fail saying
//! which toolchain is missing (never pass silently). Builds are cached under
//! `target/guest-cache/` by a hash of the example's sources, the WIT and the build script, so
//! reruns are free and any source change rebuilds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// A non-Rust example plugin.
pub struct Guest {
    /// Directory under `examples/`.
    pub dir: &'static str,
    /// Files (relative to the example) its component is built from.
    pub sources: &'static [&'static str],
    /// Says what to install when its build fails.
    pub toolchain: &'static str,
}

pub const JS_ROUTER: Guest = Guest {
    dir: "js-router",
    sources: &[
        "src/plugin.js",
        "package.json",
        "package-lock.json",
        "build.sh",
    ],
    toolchain: "Node.js 18+ with npm (the build installs @bytecodealliance/componentize-js from npm)",
};

pub const PYTHON_ROUTER: Guest = Guest {
    dir: "python-router",
    sources: &["app.py", "requirements.txt", "build.sh"],
    toolchain: "Python 3.9+ with venv and pip (the build installs componentize-py from PyPI)",
};

/// One build at a time: tests run in parallel threads, and two npm installs in one directory
/// would trip over each other.
static BUILDING: Mutex<()> = Mutex::new(());

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
}

impl Guest {
    /// The built component, from the cache or built now. Panics, naming the toolchain to
    /// install, when the build fails.
    pub fn build(&self) -> PathBuf {
        let root = repo_root();
        let example = root.join("examples").join(self.dir);
        let mut hash = Sha256::new();
        for file in self
            .sources
            .iter()
            .map(|f| example.join(f))
            .chain([root.join("wit/plugin.wit")])
        {
            let bytes =
                std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            hash.update(
                file.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .as_bytes(),
            );
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cache = target.join("guest-cache");
        let out = cache.join(format!(
            "{}-{}.wasm",
            self.dir,
            &hex::encode(hash.finalize())[..16]
        ));
        let _guard = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
        if out.exists() {
            return out;
        }
        std::fs::create_dir_all(&cache).unwrap();
        let partial = out.with_extension("partial.wasm");
        let result = Command::new("bash")
            .arg(example.join("build.sh"))
            .arg(&partial)
            .output();
        match result {
            Ok(o) if o.status.success() && partial.exists() => {
                std::fs::rename(&partial, &out).unwrap();
                out
            }
            Ok(o) => panic!(
                "building examples/{} failed ({}): its toolchain is missing or broken.\n\
                 Install {} and rerun.\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.dir,
                o.status,
                self.toolchain,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr),
            ),
            Err(e) => panic!(
                "cannot run bash for examples/{}/build.sh: {e}. Install {}.",
                self.dir, self.toolchain
            ),
        }
    }
}
