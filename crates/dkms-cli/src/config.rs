//! The one typed configuration of the `dkms` binary: read from an optional TOML file,
//! then overridden by `DKMS_*` environment variables, then by command-line flags.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Current version of the configuration format.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Format version; must be 1.
    pub version: u32,
    pub gateway: GatewaySection,
    pub node: NodeSection,
    /// `text` for people, `json` for log collectors (production).
    pub log_format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Address of the REST API and node link (`DKMS_GATEWAY_LISTEN`).
    pub listen: String,
    /// sqlx URL of the metadata store (`DKMS_DATABASE_URL`).
    pub database_url: String,
    /// Where the bootstrap admin token is written (`DKMS_ADMIN_TOKEN_FILE`).
    pub admin_token_file: PathBuf,
    /// Deadline of a key-generation session in seconds.
    pub keygen_timeout_secs: u64,
    /// Deadline of a signing session in seconds.
    pub sign_timeout_secs: u64,
    /// Protocol sessions run at once.
    pub max_running_sessions: usize,
    /// Unfinished tasks accepted before the API answers 503.
    pub max_open_tasks: usize,
    /// Seconds in a "day" of the scheduled-deletion waiting period (86400). Only tests
    /// shorten it (`DKMS_DELETION_DAY_SECS`).
    pub deletion_day_secs: u64,
    /// How often due deletions are looked for, in seconds (`DKMS_REAPER_INTERVAL_SECS`).
    pub reaper_interval_secs: u64,
    /// Lifetime of a login session token in seconds (`DKMS_SESSION_TTL_SECS`, 8 h).
    pub session_ttl_secs: u64,
    /// Failed logins in a row that lock an account (`DKMS_MAX_FAILED_LOGINS`, 5) …
    pub max_failed_logins: u32,
    /// … for this many seconds (`DKMS_LOGIN_LOCKOUT_SECS`, 15 min).
    pub login_lockout_secs: u64,
    /// How long a signing waits for its approvals before it is rejected, in seconds
    /// (`DKMS_APPROVAL_TTL_SECS`, 24 h).
    pub approval_ttl_secs: u64,
    /// Seconds without a heartbeat after which a gateway sharing the database is presumed
    /// dead and its unfinished tasks are ended FAILED (`DKMS_GATEWAY_LEASE_SECS`, 15).
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// This node's tag, as registered with `createPod` (`DKMS_NODE_TAG`).
    pub tag: Option<String>,
    /// The gateways' node links, `ws://host:8889/api/node/link`; several gateways sharing
    /// one database are listed comma-separated, and the node serves each of them
    /// (`DKMS_GATEWAY_URL`).
    pub gateway_url: String,
    /// Where the node keeps its sealed store and sealing key (`DKMS_NODE_DATA_DIR`).
    pub data_dir: PathBuf,
    /// `keyfile` (default) or `passphrase` (`DKMS_SEALER_PASSPHRASE`, stretched with
    /// Argon2id). Neither is hardware protection.
    pub sealer: String,
    /// Key file of the `keyfile` sealer (`DKMS_SEALING_KEY_FILE`); default
    /// `<data_dir>/sealing.key`. Put it on a separate secret mount in production.
    pub sealing_key_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: CONFIG_VERSION,
            gateway: GatewaySection::default(),
            node: NodeSection::default(),
            log_format: "text".into(),
        }
    }
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            listen: "127.0.0.1:8889".into(),
            database_url: "sqlite://dkms-gateway.db".into(),
            admin_token_file: PathBuf::from("admin.token"),
            keygen_timeout_secs: 180,
            sign_timeout_secs: 30,
            max_running_sessions: 64,
            max_open_tasks: 4096,
            deletion_day_secs: 86_400,
            reaper_interval_secs: 10,
            session_ttl_secs: 8 * 3600,
            max_failed_logins: 5,
            login_lockout_secs: 15 * 60,
            approval_ttl_secs: 24 * 3600,
            lease_secs: 15,
        }
    }
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            tag: None,
            gateway_url: "ws://127.0.0.1:8889/api/node/link".into(),
            data_dir: PathBuf::from("dkms-node-data"),
            sealer: "keyfile".into(),
            sealing_key_file: None,
        }
    }
}

impl NodeSection {
    /// The node links listed in `gateway_url`, each once, in order.
    pub fn gateway_urls(&self) -> Result<Vec<String>> {
        let mut urls: Vec<String> = Vec::new();
        for u in self.gateway_url.split(',').map(str::trim) {
            if u.is_empty() {
                continue;
            }
            // This build has no TLS (see docs/deployment.md §2.2): wss:// would only fail later.
            if !u.starts_with("ws://") {
                bail!("node.gateway_url: {u:?} is not a ws:// URL");
            }
            if !urls.iter().any(|x| x == u) {
                urls.push(u.to_owned());
            }
        }
        if urls.is_empty() {
            bail!("node.gateway_url names no gateway");
        }
        Ok(urls)
    }
}

impl Config {
    /// Reads `path` (if any) and applies the environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let mut cfg = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                toml::from_str::<Config>(&text)
                    .with_context(|| format!("parsing config file {}", p.display()))?
            }
            None => Config::default(),
        };
        if cfg.version != CONFIG_VERSION {
            bail!(
                "config version {} is not supported (expected {CONFIG_VERSION})",
                cfg.version
            );
        }
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        fn num<T: std::str::FromStr>(k: &str, v: String) -> Result<T> {
            v.parse()
                .map_err(|_| anyhow::anyhow!("{k}={v:?} is not a valid number"))
        }
        if let Some(v) = get("DKMS_LOG_FORMAT") {
            self.log_format = v;
        }
        if let Some(v) = get("DKMS_GATEWAY_LISTEN") {
            self.gateway.listen = v;
        }
        if let Some(v) = get("DKMS_DATABASE_URL") {
            self.gateway.database_url = v;
        }
        if let Some(v) = get("DKMS_ADMIN_TOKEN_FILE") {
            self.gateway.admin_token_file = v.into();
        }
        if let Some(v) = get("DKMS_KEYGEN_TIMEOUT_SECS") {
            self.gateway.keygen_timeout_secs = num("DKMS_KEYGEN_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("DKMS_SIGN_TIMEOUT_SECS") {
            self.gateway.sign_timeout_secs = num("DKMS_SIGN_TIMEOUT_SECS", v)?;
        }
        if let Some(v) = get("DKMS_MAX_RUNNING_SESSIONS") {
            self.gateway.max_running_sessions = num("DKMS_MAX_RUNNING_SESSIONS", v)?;
        }
        if let Some(v) = get("DKMS_MAX_OPEN_TASKS") {
            self.gateway.max_open_tasks = num("DKMS_MAX_OPEN_TASKS", v)?;
        }
        if let Some(v) = get("DKMS_DELETION_DAY_SECS") {
            self.gateway.deletion_day_secs = num("DKMS_DELETION_DAY_SECS", v)?;
        }
        if let Some(v) = get("DKMS_REAPER_INTERVAL_SECS") {
            self.gateway.reaper_interval_secs = num("DKMS_REAPER_INTERVAL_SECS", v)?;
        }
        if let Some(v) = get("DKMS_SESSION_TTL_SECS") {
            self.gateway.session_ttl_secs = num("DKMS_SESSION_TTL_SECS", v)?;
        }
        if let Some(v) = get("DKMS_MAX_FAILED_LOGINS") {
            self.gateway.max_failed_logins = num("DKMS_MAX_FAILED_LOGINS", v)?;
        }
        if let Some(v) = get("DKMS_LOGIN_LOCKOUT_SECS") {
            self.gateway.login_lockout_secs = num("DKMS_LOGIN_LOCKOUT_SECS", v)?;
        }
        if let Some(v) = get("DKMS_APPROVAL_TTL_SECS") {
            self.gateway.approval_ttl_secs = num("DKMS_APPROVAL_TTL_SECS", v)?;
        }
        if let Some(v) = get("DKMS_GATEWAY_LEASE_SECS") {
            self.gateway.lease_secs = num("DKMS_GATEWAY_LEASE_SECS", v)?;
        }
        if let Some(v) = get("DKMS_NODE_TAG") {
            self.node.tag = Some(v);
        }
        if let Some(v) = get("DKMS_GATEWAY_URL") {
            self.node.gateway_url = v;
        }
        if let Some(v) = get("DKMS_NODE_DATA_DIR") {
            self.node.data_dir = v.into();
        }
        if let Some(v) = get("DKMS_SEALER") {
            self.node.sealer = v;
        }
        if let Some(v) = get("DKMS_SEALING_KEY_FILE") {
            self.node.sealing_key_file = Some(v.into());
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env() {
        let mut cfg: Config = toml::from_str(
            "version = 1\n[gateway]\nlisten = \"0.0.0.0:9000\"\n[node]\ntag = \"n1\"\n",
        )
        .unwrap();
        assert_eq!(cfg.gateway.listen, "0.0.0.0:9000");
        assert_eq!(cfg.gateway.sign_timeout_secs, 30);
        cfg.apply_env(|k| (k == "DKMS_GATEWAY_LISTEN").then(|| "127.0.0.1:1".to_string()))
            .unwrap();
        assert_eq!(cfg.gateway.listen, "127.0.0.1:1");
        assert_eq!(cfg.node.tag.as_deref(), Some("n1"));
        assert!(
            cfg.apply_env(|k| (k == "DKMS_SIGN_TIMEOUT_SECS").then(|| "soon".to_string()))
                .is_err()
        );
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
    }

    /// The container image and the Kubernetes manifests ship beside the code: every
    /// `DKMS_*` setting they give must be one this binary reads, and the nodes must link
    /// to exactly the gateways the manifests run.
    #[test]
    fn deploy_files_match_the_configuration() {
        let files = [
            ("Dockerfile", include_str!("../../../deploy/Dockerfile")),
            (
                "gateway.yaml",
                include_str!("../../../deploy/kubernetes/gateway.yaml"),
            ),
            (
                "node.yaml",
                include_str!("../../../deploy/kubernetes/node.yaml"),
            ),
        ];
        let read = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::default()
            .apply_env(|k| {
                read.borrow_mut().insert(k.to_owned());
                None
            })
            .unwrap();
        let mut known = read.into_inner();
        // Read outside the config struct: secrets (main.rs) and client flags (clap).
        for k in [
            "DKMS_JOIN_TOKEN",
            "DKMS_SEALER_PASSPHRASE",
            "DKMS_URL",
            "DKMS_TOKEN",
            "DKMS_CONFIG",
        ] {
            known.insert(k.to_owned());
        }
        let mut used = 0;
        for (name, text) in files {
            for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
                for (at, _) in line.match_indices("DKMS_") {
                    let var: String = line[at..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    assert!(
                        known.contains(&var),
                        "{name} sets {var}, which dkms does not read"
                    );
                    used += 1;
                }
            }
        }
        assert!(used > 10, "the deploy files were read");

        let value_after = |text: &str, key: &str| -> String {
            let at = text.find(key).unwrap() + key.len();
            text[at..].lines().next().unwrap().trim().to_owned()
        };
        let replicas: usize = value_after(files[1].1, "replicas:").parse().unwrap();
        let url_at = files[2].1.find("name: DKMS_GATEWAY_URL").unwrap();
        let node = NodeSection {
            gateway_url: value_after(&files[2].1[url_at..], "value:"),
            ..NodeSection::default()
        };
        let links = node.gateway_urls().unwrap();
        assert_eq!(links.len(), replicas, "one node link per gateway replica");
        for (i, link) in links.iter().enumerate() {
            assert!(
                link.contains(&format!("dkms-gateway-{i}.dkms-gateway-peers:8889")),
                "{link}"
            );
        }
    }

    #[test]
    fn several_gateway_links() {
        let mut node = NodeSection {
            gateway_url: " ws://a:1/api/node/link, ws://b:2/api/node/link,,ws://a:1/api/node/link"
                .into(),
            ..NodeSection::default()
        };
        assert_eq!(
            node.gateway_urls().unwrap(),
            ["ws://a:1/api/node/link", "ws://b:2/api/node/link"]
        );
        node.gateway_url = "http://a:1/".into();
        assert!(node.gateway_urls().is_err());
        node.gateway_url = "wss://a:1/api/node/link".into();
        assert!(node.gateway_urls().is_err());
        node.gateway_url = " , ".into();
        assert!(node.gateway_urls().is_err());
    }
}
