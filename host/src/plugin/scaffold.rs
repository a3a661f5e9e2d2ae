//! `hookwall plugin new NAME --lang rust|js|python`: writes a working plugin project to start
//! from, with its build script, a manifest, a sample event and a copy of the WIT contract.
//!
//! The templates are embedded in the binary (`host/templates/`), so the command works from an
//! installed binary without the repository. Each project is self-contained: the Rust one uses
//! `wit-bindgen` on its `wit/` copy (the `hookwall-guest` crate is not on crates.io), the JS
//! and Python ones install their pinned toolchain (npm / PyPI) on first build.

use std::path::{Path, PathBuf};

/// The plugin contract, copied into every scaffold.
const WIT: &str = include_str!("../../../wit/plugin.wit");
const MANIFEST: &str = include_str!("../../templates/common-manifest.toml");
const EVENT: &str = include_str!("../../templates/common-event.json");

/// A plugin language `plugin new` can scaffold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, built with `cargo` for `wasm32-wasip2`.
    Rust,
    /// JavaScript, built with `componentize-js` (from npm).
    Js,
    /// Python, built with `componentize-py` (from PyPI).
    Python,
}

/// Why a scaffold could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not 1-64 of lowercase letters, digits and `-`, starting with a letter and
    /// not ending with `-`.
    #[error(
        "invalid plugin name `{0}`: use lowercase letters, digits and `-`, starting with a letter (it names NAME.wasm)"
    )]
    Name(String),
    /// The target directory exists and is not empty.
    #[error("{0} already exists and is not empty; choose another name or --dir")]
    Exists(PathBuf),
    /// A file of the project could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// (path in the project, template text, executable)
type File = (&'static str, &'static str, bool);

fn files(lang: Lang) -> Vec<File> {
    let mut files: Vec<File> = match lang {
        Lang::Rust => vec![
            (
                "Cargo.toml",
                include_str!("../../templates/rust/Cargo.toml"),
                false,
            ),
            (
                "src/lib.rs",
                include_str!("../../templates/rust/lib.rs"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/rust/build.sh"),
                true,
            ),
            (
                ".gitignore",
                include_str!("../../templates/rust/gitignore"),
                false,
            ),
        ],
        Lang::Js => vec![
            (
                "package.json",
                include_str!("../../templates/js/package.json"),
                false,
            ),
            (
                "src/plugin.js",
                include_str!("../../templates/js/plugin.js"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/js/build.sh"),
                true,
            ),
            (
                ".gitignore",
                include_str!("../../templates/js/gitignore"),
                false,
            ),
        ],
        Lang::Python => vec![
            (
                "app.py",
                include_str!("../../templates/python/app.py"),
                false,
            ),
            (
                "requirements.txt",
                include_str!("../../templates/python/requirements.txt"),
                false,
            ),
            (
                "build.sh",
                include_str!("../../templates/python/build.sh"),
                true,
            ),
            (
                ".gitignore",
                include_str!("../../templates/python/gitignore"),
                false,
            ),
        ],
    };
    files.push(("wit/plugin.wit", WIT, false));
    files.push(("event.json", EVENT, false));
    files
}

/// Checks a plugin name: it becomes `NAME.wasm`, a config key and (Rust) a crate name.
pub fn check_name(name: &str) -> Result<(), ScaffoldError> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::Name(name.to_owned()))
    }
}

/// Writes a `lang` plugin called `name` into `dir`; returns the files written.
pub fn scaffold(name: &str, lang: Lang, dir: &Path) -> Result<Vec<PathBuf>, ScaffoldError> {
    check_name(name)?;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(ScaffoldError::Exists(dir.to_path_buf()));
    }
    // Big runtimes (JS, Python) cost ~1 ms to instantiate: pool them (see docs/plugins.md).
    let instances = match lang {
        Lang::Rust => {
            "# instances = \"fresh\"      # a new instance per event (the default for small plugins)\n"
        }
        Lang::Js | Lang::Python => "instances = \"pooled\"\n",
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{lib}}", &name.replace('-', "_"))
            .replace("{{instances}}", instances)
    };
    let mut written = Vec::new();
    let manifest = format!("{name}.toml");
    let all = files(lang)
        .into_iter()
        .chain([(manifest.as_str(), MANIFEST, false)]);
    for (rel, text, executable) in all {
        let path = dir.join(rel);
        let write = |path: &Path| -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(path, fill(text))?;
            if executable {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
            }
            Ok(())
        };
        write(&path).map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["a", "order-tagger", "p2"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "Tagger", "2p", "a_b", "a-", "a/b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_language_is_filled_in_and_refuses_to_overwrite() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let dir = tempfile::tempdir().unwrap();
            let project = dir.path().join("my-plugin");
            let files = scaffold("my-plugin", lang, &project).unwrap();
            assert!(project.join("wit/plugin.wit").exists());
            assert!(project.join("my-plugin.toml").exists());
            for f in &files {
                let text = std::fs::read_to_string(f).unwrap();
                assert!(!text.contains("{{"), "{} keeps a placeholder", f.display());
            }
            let build = std::fs::read_to_string(project.join("build.sh")).unwrap();
            assert!(build.contains("my-plugin.wasm"), "{build}");
            assert!(matches!(
                scaffold("my-plugin", lang, &project),
                Err(ScaffoldError::Exists(_))
            ));
        }
    }
}
