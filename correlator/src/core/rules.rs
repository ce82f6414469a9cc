//! Grouping rules: which alerts belong together, by which key.
//!
//! A rule has a filter (sources, alert names, apps, labels; empty means any)
//! and a list of key parts. The first rule whose filter matches and whose key
//! parts all have a value decides the alert's group key, e.g.
//! `host=web01` or `site=london,label:service=payments`.

use std::collections::BTreeMap;

use super::Alert;
use super::topology::Topology;

/// One part of a group key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Host,
    App,
    Site,
    Rack,
    Source,
    Name,
    Label(String),
}

impl KeyPart {
    /// `host`, `app`, `site`, `rack`, `source`, `alertname`, or `label:NAME`.
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text {
            "host" => KeyPart::Host,
            "app" => KeyPart::App,
            "site" => KeyPart::Site,
            "rack" => KeyPart::Rack,
            "source" => KeyPart::Source,
            "alertname" => KeyPart::Name,
            other => match other.strip_prefix("label:") {
                Some(name) if !name.is_empty() => KeyPart::Label(name.to_owned()),
                _ => {
                    return Err(format!(
                        "unknown group key {other:?} (use host, app, site, rack, source, alertname or label:NAME)"
                    ));
                }
            },
        })
    }

    fn name(&self) -> String {
        match self {
            KeyPart::Host => "host".into(),
            KeyPart::App => "app".into(),
            KeyPart::Site => "site".into(),
            KeyPart::Rack => "rack".into(),
            KeyPart::Source => "source".into(),
            KeyPart::Name => "alertname".into(),
            KeyPart::Label(l) => format!("label:{l}"),
        }
    }

    fn value(&self, a: &Alert, topo: &Topology) -> Option<String> {
        let v = match self {
            KeyPart::Host => Some(a.host.clone()),
            KeyPart::App => a.app.clone(),
            KeyPart::Site => topo.site_of(&a.host).map(str::to_owned),
            KeyPart::Rack => topo.rack_of(&a.host).map(str::to_owned),
            KeyPart::Source => Some(a.source.clone()),
            KeyPart::Name => Some(a.name.clone()),
            KeyPart::Label(l) => a.labels.get(l).cloned(),
        };
        v.filter(|v| !v.is_empty())
    }
}

/// Which alerts a rule applies to. Empty lists match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertFilter {
    pub sources: Vec<String>,
    pub names: Vec<String>,
    pub apps: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

impl AlertFilter {
    pub fn matches(&self, a: &Alert) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        any(&self.sources, &a.source)
            && any(&self.names, &a.name)
            && (self.apps.is_empty() || a.app.as_deref().is_some_and(|app| any(&self.apps, app)))
            && self.labels.iter().all(|(k, v)| a.labels.get(k) == Some(v))
    }
}

/// A named grouping rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRule {
    pub name: String,
    pub filter: AlertFilter,
    pub group_by: Vec<KeyPart>,
}

impl GroupRule {
    /// The default: everything on one host groups together.
    pub fn same_host() -> Self {
        GroupRule {
            name: "same-host".into(),
            filter: AlertFilter::default(),
            group_by: vec![KeyPart::Host],
        }
    }

    /// The alert's group key under this rule, if the rule applies and every
    /// key part has a value.
    pub fn key(&self, a: &Alert, topo: &Topology) -> Option<String> {
        if !self.filter.matches(a) {
            return None;
        }
        let parts: Option<Vec<String>> = self
            .group_by
            .iter()
            .map(|p| p.value(a, topo).map(|v| format!("{}={v}", p.name())))
            .collect();
        parts.map(|p| p.join(","))
    }
}
