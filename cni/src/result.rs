//! The parts of `prevResult` the plugin reads: interfaces and IPs.

use std::net::IpAddr;

use crate::json::Json;

/// An entry of `prevResult.interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    /// The container's namespace path; absent or empty on the host.
    pub sandbox: Option<String>,
}

impl Interface {
    pub fn on_host(&self) -> bool {
        self.sandbox.as_deref().unwrap_or_default().is_empty()
    }
}

/// An entry of `prevResult.ips`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// As given: address and prefix length, e.g. `10.244.1.5/24`.
    pub address: String,
    /// Index into `interfaces`, when given.
    pub interface: Option<usize>,
}

/// The typed view of a `prevResult`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrevResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
}

impl PrevResult {
    /// Reads `json`; errors name the field, e.g.
    /// `prevResult.interfaces[1].name: missing`.
    pub fn from_json(json: &Json) -> Result<PrevResult, String> {
        let interfaces = list(json, "interfaces")?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("prevResult.interfaces[{i}]");
                Ok(Interface {
                    name: string(item, &at, "name")?
                        .filter(|s| !s.is_empty())
                        .ok_or_else(|| format!("{at}.name: missing"))?,
                    mac: string(item, &at, "mac")?,
                    sandbox: string(item, &at, "sandbox")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;

        let ips = list(json, "ips")?
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = format!("prevResult.ips[{i}]");
                let address = string(item, &at, "address")?
                    .ok_or_else(|| format!("{at}.address: missing"))?;
                check_cidr(&address).map_err(|why| format!("{at}.address: {address:?} {why}"))?;
                let interface = match item.get("interface") {
                    None | Some(Json::Null) => None,
                    Some(Json::Number(n)) => {
                        let idx = n
                            .as_u64()
                            .ok_or_else(|| format!("{at}.interface: {n} is not an index"))?
                            as usize;
                        if idx >= interfaces.len() {
                            return Err(format!(
                                "{at}.interface: {idx} is out of range ({} interfaces)",
                                interfaces.len()
                            ));
                        }
                        Some(idx)
                    }
                    Some(_) => return Err(format!("{at}.interface: not a number")),
                };
                Ok(IpConfig { address, interface })
            })
            .collect::<Result<Vec<_>, String>>()?;

        Ok(PrevResult { interfaces, ips })
    }

    /// The container-side interface named `ifname`: the one in `netns`
    /// when the result says so, else any sandboxed one of that name.
    pub fn container_interface(&self, netns: Option<&str>, ifname: &str) -> Option<usize> {
        let sandboxed = |i: &Interface| i.name == ifname && !i.on_host();
        self.interfaces
            .iter()
            .position(|i| sandboxed(i) && netns.is_some_and(|n| i.sandbox.as_deref() == Some(n)))
            .or_else(|| self.interfaces.iter().position(sandboxed))
    }

    /// The pod's addresses: those on the container interface, or on no
    /// interface in particular. Addresses a plugin reports on host-side
    /// interfaces (a bridge's gateway, say) are not the pod's.
    pub fn pod_ips(&self, container: Option<usize>) -> Vec<String> {
        self.ips
            .iter()
            .filter(|ip| match ip.interface {
                None => true,
                Some(i) => Some(i) == container || !self.interfaces[i].on_host(),
            })
            .map(|ip| ip.address.clone())
            .collect()
    }
}

fn list<'a>(json: &'a Json, key: &str) -> Result<&'a [Json], String> {
    match json.get(key) {
        None | Some(Json::Null) => Ok(&[]),
        Some(Json::Array(items)) => Ok(items),
        Some(_) => Err(format!("prevResult.{key}: not an array")),
    }
}

fn string(item: &Json, at: &str, key: &str) -> Result<Option<String>, String> {
    if !matches!(item, Json::Object(_)) {
        return Err(format!("{at}: not an object"));
    }
    match item.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{at}.{key}: not a string")),
    }
}

fn check_cidr(text: &str) -> Result<(), &'static str> {
    let (addr, prefix) = text.split_once('/').ok_or("is not in CIDR notation")?;
    let addr: IpAddr = addr.parse().map_err(|_| "is not an IP address")?;
    let prefix: u8 = prefix.parse().map_err(|_| "has an invalid prefix length")?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err("has an invalid prefix length");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PrevResult, String> {
        PrevResult::from_json(&Json::parse(text.as_bytes()).unwrap())
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"{"interfaces":[{"name":"a"},{"mac":"x"}]}"#).unwrap_err();
        assert_eq!(e, "prevResult.interfaces[1].name: missing");
        let e = parse(
            r#"{"interfaces":[{"name":"a"}],"ips":[{"address":"10.0.0.1/24","interface":3}]}"#,
        )
        .unwrap_err();
        assert!(
            e.starts_with("prevResult.ips[0].interface: 3 is out of range"),
            "{e}"
        );
        let e = parse(r#"{"ips":[{"address":"10.0.0.1"}]}"#).unwrap_err();
        assert!(e.contains("CIDR"), "{e}");
        let e = parse(r#"{"ips":[{"address":"fd00::1/129"}]}"#).unwrap_err();
        assert!(e.contains("prefix"), "{e}");
    }

    #[test]
    fn pod_ips_skip_host_side_addresses() {
        let r = parse(
            r#"{"interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/ns"}],
                "ips":[{"address":"10.0.0.5/24","interface":2},{"address":"10.0.0.1/24","interface":0},
                       {"address":"fd00::5/64"}]}"#,
        )
        .unwrap();
        let c = r.container_interface(Some("/ns"), "eth0");
        assert_eq!(c, Some(2));
        assert_eq!(r.pod_ips(c), vec!["10.0.0.5/24", "fd00::5/64"]);
        assert_eq!(r.container_interface(Some("/ns"), "net1"), None);
    }
}
