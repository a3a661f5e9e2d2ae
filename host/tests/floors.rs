//! The floor plan, enforced: every module of `host/src` imports only modules on lower floors.
//!
//! The plan is the table in `host/src/lib.rs`'s `# Layout` doc (`//! | floor | modules |`).
//! This test reads every `.rs` file under `host/src`, finds each reference to another top-level
//! module (`use crate::x…`, `use crate::{x, …}` and `crate::x::…` in code), and fails naming the
//! file, the line and the import when it points to the same floor (another module) or higher.
//! Comments and doc comments are skipped. A module missing from the table fails too, so a new
//! room has to be placed on a floor.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `module → floor`, from the `//! | N | \`a\`, \`b\` |` rows of lib.rs.
fn floor_plan() -> BTreeMap<String, u32> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("read lib.rs");
    let mut plan = BTreeMap::new();
    for line in lib.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let Some(floor) = cells.first().and_then(|c| c.parse::<u32>().ok()) else {
            continue;
        };
        for module in cells.get(1).copied().unwrap_or_default().split(',') {
            let module = module.trim().trim_matches('`').trim_end_matches('/');
            let module = module.trim_end_matches(".rs");
            if !module.is_empty() {
                plan.insert(module.to_string(), floor);
            }
        }
    }
    assert!(!plan.is_empty(), "no floor table in host/src/lib.rs");
    plan
}

/// The top-level module a file under `src` belongs to (`store/writer.rs` → `store`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every top-level module named by a `crate::` path in `code` (one statement or line).
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        // `hookwall_testkit::crate::` cannot occur; `$crate::` in macros is not ours.
        let before = &rest[..at];
        rest = &rest[at + "crate::".len()..];
        if before.ends_with('$') || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the first segment of each item at depth 0.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(first_segment(&item));
        } else {
            out.push(first_segment(rest));
        }
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

fn first_segment(path: &str) -> String {
    path.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The code of `text` as statements: `use` items joined up to their `;`, other lines as they
/// are, each with its first line number; comments dropped.
fn statements(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        if let Some((at, mut stmt)) = open.take() {
            stmt.push_str(code);
            if code.contains(';') {
                out.push((at, stmt));
            } else {
                open = Some((at, stmt));
            }
            continue;
        }
        let trimmed = code.trim_start();
        let is_use = trimmed.starts_with("use ")
            || trimmed.starts_with("pub use ")
            || trimmed.starts_with("pub(crate) use ")
            || trimmed.starts_with("pub(super) use ");
        if is_use && !code.contains(';') {
            open = Some((i + 1, code.to_string()));
        } else {
            out.push((i + 1, code.to_string()));
        }
    }
    out
}

/// Every import in `host/src` that points sideways or up: `file:line: module (floor a) imports
/// other (floor b)`.
fn violations(plan: &BTreeMap<String, u32>) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let module = module_of(&file);
        let rel = file
            .strip_prefix(src().parent().unwrap())
            .unwrap()
            .display()
            .to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(&floor) = plan.get(&module) else {
            found.push(format!(
                "{rel}: module `{module}` is not on any floor of lib.rs's table"
            ));
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("read source");
        for (line, stmt) in statements(&text) {
            for target in crate_refs(&stmt) {
                if target == module {
                    continue;
                }
                match plan.get(&target) {
                    Some(&other) if other < floor => {}
                    Some(&other) => found.push(format!(
                        "{rel}:{line}: `{module}` (floor {floor}) imports `crate::{target}` \
                         (floor {other}): `{}`",
                        stmt.trim()
                    )),
                    None => found.push(format!(
                        "{rel}:{line}: imports `crate::{target}`, which is on no floor"
                    )),
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_lower_floors() {
    let plan = floor_plan();
    let found = violations(&plan);
    assert!(
        found.is_empty(),
        "{} import(s) break the floor plan of host/src/lib.rs:\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn the_parser_sees_grouped_nested_and_inline_imports() {
    assert_eq!(
        crate_refs("use crate::{store::{A, B}, verify, event::Priority};"),
        ["store", "verify", "event"]
    );
    assert_eq!(crate_refs("    let x = crate::plugin::BUSY;"), ["plugin"]);
    assert_eq!(crate_refs("macro! { $crate::x::y }"), Vec::<String>::new());
    let text = "use crate::{\n    a::B,\n    c,\n};\n// use crate::z;\nfn f() {}\n";
    let refs: Vec<_> = statements(text)
        .iter()
        .flat_map(|(_, s)| crate_refs(s))
        .collect();
    assert_eq!(refs, ["a", "c"]);
}
