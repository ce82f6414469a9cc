//! The inventory: where hosts are (site, rack), which hosts run which app,
//! and which apps depend on which. Used for group keys (site, rack) and for
//! grouping an app's alerts under the incident of an app it depends on.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Where a host is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    pub site: Option<String>,
    pub rack: Option<String>,
}

/// What the inventory says about an app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppInfo {
    pub hosts: Vec<String>,
    /// Apps this app needs; an outage there explains errors here.
    pub depends_on: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub hosts: HashMap<String, HostInfo>,
    pub apps: HashMap<String, AppInfo>,
}

impl Topology {
    pub fn site_of(&self, host: &str) -> Option<&str> {
        self.hosts.get(host).and_then(|h| h.site.as_deref())
    }

    pub fn rack_of(&self, host: &str) -> Option<&str> {
        self.hosts.get(host).and_then(|h| h.rack.as_deref())
    }

    /// Every app `app` depends on, nearest first (cycles are cut).
    pub fn dependencies(&self, app: &str) -> Vec<String> {
        self.walk(app, |a| {
            self.apps
                .get(a)
                .map(|i| i.depends_on.clone())
                .unwrap_or_default()
        })
    }

    /// Every app that depends on `app`, nearest first.
    pub fn dependents(&self, app: &str) -> Vec<String> {
        self.walk(app, |a| {
            let mut direct: Vec<String> = self
                .apps
                .iter()
                .filter(|(_, info)| info.depends_on.iter().any(|d| d == a))
                .map(|(name, _)| name.clone())
                .collect();
            direct.sort();
            direct
        })
    }

    fn walk(&self, start: &str, next: impl Fn(&str) -> Vec<String>) -> Vec<String> {
        let mut seen = BTreeSet::from([start.to_owned()]);
        let mut out = Vec::new();
        let mut queue: VecDeque<String> = next(start).into();
        while let Some(a) = queue.pop_front() {
            if seen.insert(a.clone()) {
                queue.extend(next(&a));
                out.push(a);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo() -> Topology {
        let app = |deps: &[&str]| AppInfo {
            hosts: vec![],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        };
        Topology {
            hosts: HashMap::new(),
            apps: HashMap::from([
                ("TRANSPROC".to_string(), app(&["CORE"])),
                ("CORE".to_string(), app(&["DB"])),
                ("DB".to_string(), app(&["TRANSPROC"])), // a cycle
                ("CRM".to_string(), app(&["CORE"])),
            ]),
        }
    }

    #[test]
    fn dependencies_are_transitive_and_cycles_are_cut() {
        assert_eq!(topo().dependencies("TRANSPROC"), vec!["CORE", "DB"]);
        assert_eq!(topo().dependents("CORE"), vec!["CRM", "TRANSPROC", "DB"]);
        assert!(topo().dependencies("UNKNOWN").is_empty());
    }
}
