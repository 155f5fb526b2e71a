//! `straitd install-plugin DIR`: puts the CNI plugins a node's runtime calls into its CNI binary
//! directory. They are `strait`, shipped beside `straitd`, and the reference plugins the deployed
//! chain calls, shipped in `<prefix>/lib/strait/cni/` (the image carries `strait-portmap`, for
//! hostPort, under its own name so that it never replaces a portmap the node already has). Each
//! is written under a temporary name and renamed, so a runtime never runs a half-written plugin
//! and one that is running is not disturbed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::AgentError;

/// The plugins shipped with the `straitd` at `exe`: `strait` beside it, then every file in
/// `../lib/strait/cni/` relative to its directory, if that directory exists.
pub fn shipped_plugins(exe: &Path) -> Result<Vec<PathBuf>, AgentError> {
    let mut plugins = vec![exe.with_file_name("strait")];
    let Some(bin_dir) = exe.parent() else {
        return Ok(plugins);
    };
    let chained = bin_dir.join("../lib/strait/cni");
    if !chained.is_dir() {
        return Ok(plugins);
    }
    let listing = |source| AgentError::Install {
        what: format!("listing the chained plugins in {}", chained.display()),
        source,
    };
    let mut extra = Vec::new();
    for entry in std::fs::read_dir(&chained).map_err(listing)? {
        let path = entry.map_err(listing)?.path();
        if path.is_file() {
            extra.push(path);
        }
    }
    extra.sort();
    plugins.extend(extra);
    Ok(plugins)
}

/// Copies each of `plugins` into `dir` under its own file name; returns where they went.
pub fn install(plugins: &[PathBuf], dir: &Path) -> Result<Vec<PathBuf>, AgentError> {
    if !dir.is_dir() {
        return Err(AgentError::NoCniBinDir(dir.to_path_buf()));
    }
    plugins
        .iter()
        .map(|source| install_one(source, dir))
        .collect()
}

fn install_one(source: &Path, dir: &Path) -> Result<PathBuf, AgentError> {
    let failed = |what: String| move |source| AgentError::Install { what, source };
    let name = source
        .file_name()
        .ok_or_else(|| AgentError::NotAPlugin(source.to_path_buf()))?;
    let target = dir.join(name);
    let staging = dir.join(format!(".{}.installing", name.to_string_lossy()));
    let placed = std::fs::copy(source, &staging)
        .map_err(failed(format!(
            "copying {} to {}",
            source.display(),
            staging.display()
        )))
        .and_then(|_| {
            std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o755))
                .map_err(failed(format!("making {} executable", staging.display())))
        })
        .and_then(|()| {
            std::fs::rename(&staging, &target).map_err(failed(format!(
                "moving the plugin into place at {}",
                target.display()
            )))
        });
    if placed.is_err() {
        // A partial copy must not stay behind.
        let _ = std::fs::remove_file(&staging);
    }
    placed.map(|()| target)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image-like tree: `usr/bin/{straitd,strait}` and `usr/lib/strait/cni/<chained>`.
    fn image_tree(root: &Path, chained: &[&str]) -> PathBuf {
        let bin = root.join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("straitd"), "agent").unwrap();
        std::fs::write(bin.join("strait"), "plugin").unwrap();
        if !chained.is_empty() {
            let lib = root.join("usr/lib/strait/cni");
            std::fs::create_dir_all(&lib).unwrap();
            for name in chained {
                std::fs::write(lib.join(name), *name).unwrap();
            }
        }
        bin.join("straitd")
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("strait-install-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn installs_the_plugin_and_the_chained_ones_executable_and_replacing_older_copies() {
        let root = scratch("image");
        let exe = image_tree(&root, &["strait-portmap"]);
        let cni_bin = root.join("host/opt/cni/bin");
        std::fs::create_dir_all(&cni_bin).unwrap();
        std::fs::write(cni_bin.join("strait"), "older").unwrap();
        std::fs::write(cni_bin.join("portmap"), "the node's own").unwrap();

        let installed = install(&shipped_plugins(&exe).unwrap(), &cni_bin).unwrap();

        assert_eq!(
            installed,
            [cni_bin.join("strait"), cni_bin.join("strait-portmap")]
        );
        assert_eq!(std::fs::read_to_string(&installed[0]).unwrap(), "plugin");
        assert_eq!(
            std::fs::read_to_string(&installed[1]).unwrap(),
            "strait-portmap"
        );
        for path in &installed {
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{}", path.display());
        }
        assert_eq!(
            std::fs::read_to_string(cni_bin.join("portmap")).unwrap(),
            "the node's own"
        );
        let mut left: Vec<_> = std::fs::read_dir(&cni_bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            ["portmap", "strait", "strait-portmap"],
            "no staging files left"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn without_a_lib_directory_only_the_plugin_ships() {
        let root = scratch("bare");
        let exe = image_tree(&root, &[]);
        assert_eq!(
            shipped_plugins(&exe).unwrap(),
            [root.join("usr/bin/strait")]
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_plugin_missing_from_the_image_is_named() {
        let root = scratch("unshipped");
        let exe = image_tree(&root, &[]);
        std::fs::remove_file(root.join("usr/bin/strait")).unwrap();
        let cni_bin = root.join("cni-bin");
        std::fs::create_dir_all(&cni_bin).unwrap();
        let error = install(&shipped_plugins(&exe).unwrap(), &cni_bin).unwrap_err();
        let text = format!("{error:#}");
        assert!(text.contains("usr/bin/strait"), "{text}");
        assert_eq!(std::fs::read_dir(&cni_bin).unwrap().count(), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_plugin_that_cannot_be_put_in_place_leaves_no_partial_copy() {
        let root = scratch("blocked");
        let exe = image_tree(&root, &[]);
        let cni_bin = root.join("cni-bin");
        // A non-empty directory where the plugin goes: the final rename fails.
        std::fs::create_dir_all(cni_bin.join("strait/inside")).unwrap();
        let error = install(&shipped_plugins(&exe).unwrap(), &cni_bin).unwrap_err();
        assert!(
            format!("{error:#}").contains("moving the plugin into place"),
            "{error:#}"
        );
        let left: Vec<_> = std::fs::read_dir(&cni_bin)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, ["strait"], "no staging file left");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_target_directory_says_what_to_mount() {
        let root = scratch("missing");
        let exe = image_tree(&root, &[]);
        let error = install(&shipped_plugins(&exe).unwrap(), &root.join("absent"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not exist: mount"), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
