//! The execution parameters: `CNI_*` environment variables.

use std::collections::BTreeMap;

use crate::error::{code, CniError};

/// The `CNI_*` variables of one invocation, as given.
///
/// Kept raw so that `run` can turn every problem into a CNI error result
/// instead of failing before it can answer.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The `CNI_*` variables of this process.
    pub fn from_process() -> Env {
        Env::from_pairs(std::env::vars_os().filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with("CNI_")
                .then(|| (k, v.to_string_lossy().into_owned()))
        }))
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Env {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    fn nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

impl Command {
    pub fn from_env(env: &Env) -> Result<Command, CniError> {
        let invalid = |what: String| {
            CniError::new(
                code::INVALID_ENV,
                "invalid environment variable CNI_COMMAND",
                what,
            )
        };
        match env.nonempty("CNI_COMMAND") {
            None => Err(invalid("CNI_COMMAND: missing".into())),
            Some("ADD") => Ok(Command::Add),
            Some("DEL") => Ok(Command::Del),
            Some("CHECK") => Ok(Command::Check),
            Some("VERSION") => Ok(Command::Version),
            Some("GC") => Ok(Command::Gc),
            Some("STATUS") => Ok(Command::Status),
            Some(other) => Err(invalid(format!(
                "CNI_COMMAND: {other:?} is not one of ADD, DEL, CHECK, VERSION, GC, STATUS"
            ))),
        }
    }
}

/// The pod identity Kubernetes runtimes pass in `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodArgs {
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// The parameters of an attachment operation (ADD, DEL, CHECK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    /// The container's network namespace path; optional on DEL only.
    pub netns: Option<String>,
    pub ifname: String,
    pub pod: PodArgs,
    pub path: Vec<String>,
}

impl Attachment {
    /// Reads and validates the attachment parameters; every invalid
    /// variable is named in one error, as the spec asks.
    pub fn from_env(env: &Env, netns_required: bool) -> Result<Attachment, CniError> {
        let mut problems = Vec::new();

        let container_id = env.nonempty("CNI_CONTAINERID").unwrap_or_default();
        if container_id.is_empty() {
            problems.push("CNI_CONTAINERID: missing".to_string());
        } else if !valid_container_id(container_id) {
            problems.push(format!(
                "CNI_CONTAINERID: {container_id:?} must start with a letter or digit and hold only letters, digits, '_', '.' and '-'"
            ));
        }

        let netns = env.nonempty("CNI_NETNS").map(str::to_string);
        if netns_required && netns.is_none() {
            problems.push("CNI_NETNS: missing".to_string());
        }

        let ifname = env.nonempty("CNI_IFNAME").unwrap_or_default();
        if ifname.is_empty() {
            problems.push("CNI_IFNAME: missing".to_string());
        } else if let Err(why) = valid_ifname(ifname) {
            problems.push(format!("CNI_IFNAME: {ifname:?} {why}"));
        }

        let pod = match parse_cni_args(env.get("CNI_ARGS").unwrap_or_default()) {
            Ok(pod) => pod,
            Err(why) => {
                problems.push(format!("CNI_ARGS: {why}"));
                PodArgs::default()
            }
        };

        if !problems.is_empty() {
            let names: Vec<&str> = problems
                .iter()
                .filter_map(|p| p.split(':').next())
                .collect();
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("invalid environment variables {}", names.join(", ")),
                problems.join("; "),
            ));
        }

        let path = env
            .get("CNI_PATH")
            .unwrap_or_default()
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();

        Ok(Attachment {
            container_id: container_id.to_string(),
            netns,
            ifname: ifname.to_string(),
            pod,
            path,
        })
    }
}

/// The spec's container id grammar. It also keeps record file names safe:
/// no '/', and no leading '.'.
pub fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// What Linux accepts as an interface name (`dev_valid_name`).
pub fn valid_ifname(name: &str) -> Result<(), &'static str> {
    if name.len() > 15 {
        return Err("is longer than 15 bytes");
    }
    if name == "." || name == ".." {
        return Err("is not a valid interface name");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err("must not contain '/', ':' or whitespace");
    }
    Ok(())
}

/// `K=V;K=V`. Unknown keys are ignored (runtimes pass others, such as
/// `IgnoreUnknown` and `K8S_POD_INFRA_CONTAINER_ID`).
pub fn parse_cni_args(text: &str) -> Result<PodArgs, String> {
    let mut pod = PodArgs::default();
    for pair in text.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not KEY=VALUE"));
        };
        let slot = match key {
            "K8S_POD_NAMESPACE" => &mut pod.namespace,
            "K8S_POD_NAME" => &mut pod.name,
            "K8S_POD_UID" => &mut pod.uid,
            _ => continue,
        };
        *slot = (!value.is_empty()).then(|| value.to_string());
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cni_args_pick_the_pod_identity() {
        let pod = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=api-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=1234-5",
        )
        .unwrap();
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        assert_eq!(pod.name.as_deref(), Some("api-0"));
        assert_eq!(pod.uid.as_deref(), Some("1234-5"));
        assert_eq!(parse_cni_args("").unwrap(), PodArgs::default());
        assert!(parse_cni_args("K8S_POD_NAME")
            .unwrap_err()
            .contains("K8S_POD_NAME"));
    }

    #[test]
    fn container_ids_and_ifnames_are_validated() {
        assert!(valid_container_id("0123abc_def.g-h"));
        assert!(!valid_container_id("-abc"));
        assert!(!valid_container_id("../etc"));
        assert!(!valid_container_id(""));
        assert!(valid_ifname("eth0").is_ok());
        assert!(valid_ifname("net1/x").is_err());
        assert!(valid_ifname("a-very-long-interface").is_err());
        assert!(valid_ifname("..").is_err());
    }

    #[test]
    fn attachment_names_every_invalid_variable() {
        let env = Env::from_pairs([("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth/0")]);
        let err = Attachment::from_env(&env, true).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        for name in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"] {
            assert!(err.msg.contains(name), "{err}");
        }
    }

    #[test]
    fn netns_is_optional_on_del() {
        let env = Env::from_pairs([
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
        ]);
        let a = Attachment::from_env(&env, false).unwrap();
        assert_eq!(a.netns, None);
        assert_eq!(a.path, vec!["/opt/cni/bin", "/usr/lib/cni"]);
        assert!(Attachment::from_env(&env, true).is_err());
    }

    #[test]
    fn unknown_command_is_an_env_error() {
        let err = Command::from_env(&Env::from_pairs([("CNI_COMMAND", "UPDATE")])).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert!(err.details.contains("UPDATE"));
        assert_eq!(
            Command::from_env(&Env::from_pairs([("CNI_COMMAND", "GC")])).unwrap(),
            Command::Gc
        );
    }
}
