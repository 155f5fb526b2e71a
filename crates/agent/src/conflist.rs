//! The CNI configuration list the agent writes once it is ready to serve: strait first, then the
//! configured chain of meta plugins. Written atomically, so a runtime never reads half of it.

use std::io;
use std::path::PathBuf;

use serde_json::{Value, json};
use strait_store::file::write_atomic;

use crate::config::Config;

pub fn render(config: &Config) -> Value {
    let mut plugins = vec![json!({
        "type": "strait",
        "socket": config.socket,
    })];
    plugins.extend(
        config
            .cni
            .chain
            .iter()
            .map(|table| serde_json::to_value(table).expect("TOML tables are JSON")),
    );
    json!({
        "cniVersion": config.cni.cni_version,
        "name": config.conflist_network().name,
        "plugins": plugins,
    })
}

/// Where the conflist goes; `None` when the configuration asks for none.
fn path(config: &Config) -> Option<PathBuf> {
    (!config.cni.conf_dir.as_os_str().is_empty())
        .then(|| config.cni.conf_dir.join(&config.cni.conf_file))
}

/// Writes the conflist; `None` when the configuration asks for none.
pub fn write(config: &Config) -> io::Result<Option<PathBuf>> {
    let Some(path) = path(config) else {
        return Ok(None);
    };
    std::fs::create_dir_all(&config.cni.conf_dir)?;
    let mut bytes = serde_json::to_vec_pretty(&render(config)).expect("JSON serializes");
    bytes.push(b'\n');
    write_atomic(&path, &bytes, 0o644)?;
    Ok(Some(path))
}

/// Removes the conflist (the node no longer takes pods); gone already is fine.
pub fn remove(config: &Config) -> io::Result<()> {
    match path(config).map(std::fs::remove_file) {
        Some(Err(e)) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strait_comes_first_and_the_chain_follows() {
        let config = Config::parse(
            r#"
            socket = "/run/x/s.sock"
            [cni]
            chain = [{ type = "portmap", capabilities = { portMappings = true } }]
            [[network]]
            name = "pods"
            [[network.pool]]
            cidr = "10.244.0.0/16"
            "#,
            || Some("n".into()),
        )
        .unwrap();
        let list = render(&config);
        assert_eq!(list["name"], "pods");
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(
            list["plugins"][0],
            json!({"type": "strait", "socket": "/run/x/s.sock"})
        );
        assert_eq!(list["plugins"][1]["capabilities"]["portMappings"], true);
    }
}
