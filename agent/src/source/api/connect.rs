//! How to reach the API server: a kubeconfig file, or the pod's service
//! account (in-cluster).

use anyhow::Context;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub enum Connection {
    Kubeconfig(PathBuf),
    /// `KUBERNETES_SERVICE_HOST`/`_PORT` and the service account token.
    InCluster,
}

impl Connection {
    pub async fn client(&self) -> anyhow::Result<Client> {
        let config = match self {
            Connection::Kubeconfig(path) => {
                let kc = Kubeconfig::read_from(path)
                    .with_context(|| format!("read kubeconfig {}", path.display()))?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                    .await
                    .with_context(|| format!("kubeconfig {}", path.display()))?
            }
            Connection::InCluster => Config::incluster().context(
                "in-cluster configuration (no --kubeconfig or --manifests given, and not running in a pod)",
            )?,
        };
        Client::try_from(config).context("create the Kubernetes client")
    }
}
