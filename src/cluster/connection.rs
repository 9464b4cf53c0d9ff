//! The connection to the API server: found as kubectl finds it, and named in every error.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The replica's namespace: `POD_NAMESPACE` (the downward API), else `--own-namespace`.
pub fn pod_namespace(own_namespace: &str) -> String {
    std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| own_namespace.to_owned())
}

/// Where the cluster configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Kubeconfig(PathBuf),
    InCluster,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Kubeconfig(path) => write!(f, "kubeconfig {}", path.display()),
            Source::InCluster => f.write_str("in-cluster service account"),
        }
    }
}

/// A client and where its configuration came from.
pub struct Connection {
    pub client: kube::Client,
    pub source: Source,
    pub server: String,
}

/// Connects as kubectl would: `kubeconfig` (`--kubeconfig`), else the in-cluster service account, else
/// `KUBECONFIG` / `~/.kube/config`. `Ok(None)` when nothing is configured. A configuration that
/// exists but is broken is an error that names it.
pub async fn connect(kubeconfig: Option<&Path>) -> anyhow::Result<Option<Connection>> {
    if let Some(path) = kubeconfig {
        return from_kubeconfig(path).await.map(Some);
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        let config = kube::Config::incluster().context(
            "running in a pod (KUBERNETES_SERVICE_HOST is set) but the service account cannot be read; mount its token or pass --kubeconfig",
        )?;
        return client(config, Source::InCluster).map(Some);
    }
    if let Some(paths) = std::env::var_os("KUBECONFIG") {
        // The first file of the list that exists, as kubectl merges from the first.
        if let Some(path) = std::env::split_paths(&paths).find(|p| p.exists()) {
            return from_kubeconfig(&path).await.map(Some);
        }
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = Path::new(&home).join(".kube/config");
        if path.exists() {
            return from_kubeconfig(&path).await.map(Some);
        }
    }
    Ok(None)
}

async fn from_kubeconfig(path: &Path) -> anyhow::Result<Connection> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .with_context(|| {
            format!(
                "the kubeconfig {} cannot be used (check its current-context, cluster and user)",
                path.display()
            )
        })?;
    client(config, Source::Kubeconfig(path.to_path_buf()))
}

fn client(config: kube::Config, source: Source) -> anyhow::Result<Connection> {
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config)
        .with_context(|| format!("cannot make a client for {server} from the {source}"))?;
    Ok(Connection {
        client,
        source,
        server,
    })
}
