//! Builds every wasm plugin the end-to-end tests load, and writes `$OUT_DIR/wasm_paths.rs`
//! with one `pub const NAME: &str = "/abs/path/name.wasm";` per component (exposed as
//! `hookwall_testkit::wasm`).
//!
//! The plugins live in three nested workspaces outside the host workspace (`plugins/`,
//! `examples/rust-router/`, `tests/plugins/`), so they are built by running cargo again, for
//! `wasm32-wasip2` in release (the profile real plugins ship with). All three share one target
//! dir under `OUT_DIR` and have identical release profiles, so `hookwall-guest` and its
//! dependencies compile once.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

const WASM_TARGET: &str = "wasm32-wasip2";

/// A component the tests use.
struct Component {
    /// The constant's name in `wasm_paths.rs`.
    constant: &'static str,
    /// The nested workspace that builds it, relative to the repository root.
    workspace: &'static str,
    /// The crate's directory, relative to the repository root.
    krate: &'static str,
    /// The crate's library name: the artifact is `<lib>.wasm`.
    lib: &'static str,
}

const fn component(
    constant: &'static str,
    workspace: &'static str,
    krate: &'static str,
    lib: &'static str,
) -> Component {
    Component {
        constant,
        workspace,
        krate,
        lib,
    }
}

const COMPONENTS: &[Component] = &[
    component("ROUTER", "plugins", "plugins/router", "router"),
    component("FILTER", "plugins", "plugins/filter", "filter"),
    component("REDACT", "plugins", "plugins/redact", "redact"),
    component(
        "CLOUDEVENTS",
        "plugins",
        "plugins/cloudevents",
        "cloudevents",
    ),
    component(
        "JSON_SCHEMA",
        "plugins",
        "plugins/json-schema",
        "json_schema",
    ),
    component(
        "RUST_ROUTER",
        "examples/rust-router",
        "examples/rust-router",
        "rust_router",
    ),
    component(
        "ORDER_LIFECYCLE",
        "examples/order-lifecycle",
        "examples/order-lifecycle",
        "order_lifecycle",
    ),
    component("SPIN", "tests/plugins", "tests/plugins/spin", "spin"),
    component("SLEEPY", "tests/plugins", "tests/plugins/sleepy", "sleepy"),
    component("HOG", "tests/plugins", "tests/plugins/hog", "hog"),
    component("PANIC", "tests/plugins", "tests/plugins/panic", "panic"),
    component("FAIL", "tests/plugins", "tests/plugins/fail", "fail"),
    component("UPPER", "tests/plugins", "tests/plugins/upper", "upper"),
    component("ECHO", "tests/plugins", "tests/plugins/echo", "echo"),
    component("SNOOP", "tests/plugins", "tests/plugins/snoop", "snoop"),
    component(
        "RECURSE",
        "tests/plugins",
        "tests/plugins/recurse",
        "recurse",
    ),
    component("FLOOD", "tests/plugins", "tests/plugins/flood", "flood"),
    component("CHATTY", "tests/plugins", "tests/plugins/chatty", "chatty"),
    component(
        "STATICS",
        "tests/plugins",
        "tests/plugins/statics",
        "statics",
    ),
    component(
        "COUNTER",
        "tests/plugins",
        "tests/plugins/counter",
        "counter",
    ),
    component(
        "HANDSHAKE",
        "tests/plugins",
        "tests/plugins/handshake",
        "handshake",
    ),
];

/// Environment a build script inherits that would leak the outer build's settings into the
/// nested wasm builds: host rustflags (coverage, `-D warnings` meant for the host, linker
/// args), the outer target and target dir, `cargo clippy`'s and `cargo fix`'s rustc
/// wrappers, and the outer jobserver.
const LEAKY_ENV: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_MAKEFLAGS",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "__CARGO_FIX_PLZ",
    "CARGO_LLVM_COV",
    "__CARGO_LLVM_COV_RUSTC_WRAPPER",
    "__CARGO_LLVM_COV_RUSTC_WRAPPER_CRATE_NAMES",
    "__CARGO_LLVM_COV_RUSTC_WRAPPER_RUSTFLAGS",
];

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("tests/ sits in the repository root");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let target_dir = out_dir.join("wasm");

    // Only what the components are built from: the nested workspaces also hold build outputs
    // (`target/`, `plugins/*.wasm`) that must not make every host build dirty.
    let mut watched = vec![
        "wit".to_owned(),
        "guest-sdk/src".to_owned(),
        "guest-sdk/Cargo.toml".to_owned(),
        // The bundled plugins' shared rule matching.
        "plugins/rules/src".to_owned(),
        "plugins/rules/Cargo.toml".to_owned(),
    ];
    for c in COMPONENTS {
        watched.push(format!("{}/Cargo.toml", c.workspace));
        watched.push(format!("{}/Cargo.lock", c.workspace));
        watched.push(format!("{}/src", c.krate));
        watched.push(format!("{}/Cargo.toml", c.krate));
    }
    watched.sort();
    watched.dedup();
    for path in &watched {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }

    check_wasm_target();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut workspaces: Vec<&str> = COMPONENTS.iter().map(|c| c.workspace).collect();
    workspaces.sort_unstable();
    workspaces.dedup();
    for workspace in workspaces {
        build_workspace(&cargo, &root.join(workspace), &target_dir);
    }

    let mut generated =
        String::from("// Generated by tests/build.rs: the built plugin components.\n");
    for c in COMPONENTS {
        let wasm = target_dir
            .join(WASM_TARGET)
            .join("release")
            .join(format!("{}.wasm", c.lib));
        check_component(&wasm);
        let path = wasm.to_str().expect("the target dir path is UTF-8");
        generated += &format!(
            "/// The `{krate}` component.\npub const {name}: &str = {path:?};\n",
            krate = c.krate,
            name = c.constant,
        );
    }
    std::fs::write(out_dir.join("wasm_paths.rs"), generated).expect("write wasm_paths.rs");
}

/// Fails early, with the fix, when the toolchain lacks the wasm target: otherwise cargo's
/// error ("can't find crate for `core`") does not say what to do.
fn check_wasm_target() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .expect("run rustc --print target-libdir");
    let libdir = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !Path::new(libdir.trim()).is_dir() {
        panic!(
            "the {WASM_TARGET} target is not installed for this toolchain; the test plugins need it.\n\
             Run: rustup target add {WASM_TARGET}"
        );
    }
}

fn build_workspace(cargo: &OsString, workspace: &Path, target_dir: &Path) {
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace)
        .args(["build", "--release", "--locked", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for var in LEAKY_ENV {
        command.env_remove(var);
    }
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("run cargo for {}: {e}", workspace.display()));
    if !status.success() {
        panic!(
            "building the wasm plugins in {} failed ({status}); see the cargo output above.\n\
             If it says the lock file needs updating, run `cargo update --workspace` there.",
            workspace.display()
        );
    }
}

/// A wasm component starts with `\0asm` and version 0x0d, layer 1 (a core module has layer 0).
fn check_component(wasm: &Path) {
    let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("read {}: {e}", wasm.display()));
    assert!(
        bytes.starts_with(b"\0asm\x0d\x00\x01\x00"),
        "{} is not a wasm component",
        wasm.display()
    );
}
