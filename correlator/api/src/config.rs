//! Config primitives shared by every YAML file: durations, secret references
//! and the file-relative path rule.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// A duration written the human way: `500ms`, `2s`, `5m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    pub fn as_millis_i64(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl std::str::FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(s)
            .map(Duration)
            .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. 500ms, 2s, 5m)"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Where a secret lives: an environment variable or a file. Secrets are
/// never written inline in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// How a secret reference is written in a config file: `{ env: NAME }` or
/// `{ file: PATH }`.
///
/// Stage one accepts any value here, so serde never gets to quote an inline
/// secret in an error message; [`SecretRef::source`] checks it in stage two.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SecretRef {
    /// A mapping (a sequence is not accepted: serde would read it as a struct).
    Reference(std::collections::BTreeMap<String, String>),
    /// Anything else. The value is not kept.
    Other(serde::de::IgnoredAny),
}

/// What a malformed secret reference is told.
pub const SECRET_FORM: &str =
    "write exactly one of `{ env: NAME }` or `{ file: PATH }`; secrets are never inline";

impl SecretRef {
    /// The secret's source, or [`SECRET_FORM`] when the reference is malformed.
    pub fn source(&self) -> Result<SecretSource, &'static str> {
        let SecretRef::Reference(map) = self else {
            return Err(SECRET_FORM);
        };
        let mut entries = map.iter();
        match (entries.next(), entries.next()) {
            (Some((key, value)), None) if !value.is_empty() => match key.as_str() {
                "env" => Ok(SecretSource::Env(value.clone())),
                "file" => Ok(SecretSource::File(PathBuf::from(value))),
                _ => Err(SECRET_FORM),
            },
            _ => Err(SECRET_FORM),
        }
    }

    /// [`SecretRef::source`], then [`SecretSource::resolve`], with one error text.
    pub fn resolve(&self, base: &Path) -> Result<Secret, String> {
        self.source()?.resolve(base).map_err(|e| e.to_string())
    }
}

/// A secret's bytes. `Debug` and `Display` never show them.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as UTF-8 text, trimmed of surrounding whitespace.
    pub fn expose_str(&self) -> Result<&str, SecretError> {
        std::str::from_utf8(&self.0)
            .map(str::trim)
            .map_err(|_| SecretError::NotUtf8)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("environment variable {0} is empty")]
    EnvEmpty(String),
    #[error("cannot read secret file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("secret file {0} is empty")]
    FileEmpty(PathBuf),
    #[error("secret is not valid UTF-8")]
    NotUtf8,
}

impl SecretSource {
    /// Reads the secret. A relative file path is taken relative to `base`,
    /// the directory of the config file that names it.
    pub fn resolve(&self, base: &Path) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Env(name) => match std::env::var_os(name) {
                None => Err(SecretError::EnvMissing(name.clone())),
                Some(v) if v.is_empty() => Err(SecretError::EnvEmpty(name.clone())),
                Some(v) => Ok(Secret(v.into_encoded_bytes())),
            },
            SecretSource::File(path) => {
                let path = relative_to(base, path);
                let bytes = std::fs::read(&path).map_err(|e| SecretError::File {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                if bytes.trim_ascii().is_empty() {
                    return Err(SecretError::FileEmpty(path));
                }
                Ok(Secret(bytes))
            }
        }
    }
}

/// `path` if absolute, else `base/path`.
pub fn relative_to(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// The directory holding a config file, used as the base for relative paths.
pub fn config_dir(config_file: &Path) -> PathBuf {
    match config_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_the_human_way_and_explain_bad_input() {
        assert_eq!("2s".parse::<Duration>(), Ok(Duration::from_secs(2)));
        assert_eq!("500ms".parse::<Duration>(), Ok(Duration::from_millis(500)));
        let err = "2 parsecs".parse::<Duration>().unwrap_err();
        assert!(err.contains("invalid duration"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_relative_to_the_config_and_are_redacted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "s3cret-value\n").unwrap();
        let secret = SecretSource::File("key".into())
            .resolve(dir.path())
            .unwrap();
        assert_eq!(secret.expose_str(), Ok("s3cret-value"));
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        std::fs::write(dir.path().join("empty"), "\n").unwrap();
        assert!(matches!(
            SecretSource::File("empty".into()).resolve(dir.path()),
            Err(SecretError::FileEmpty(_))
        ));
        assert!(matches!(
            SecretSource::File("missing".into()).resolve(dir.path()),
            Err(SecretError::File { .. })
        ));
    }

    #[test]
    fn secret_references_are_one_key_mappings() {
        let source = |text: &str| serde_yaml::from_str::<SecretRef>(text).unwrap().source();
        assert_eq!(
            source("{ env: FINCORP_AGENT_KEY }"),
            Ok(SecretSource::Env("FINCORP_AGENT_KEY".into()))
        );
        assert_eq!(
            source("file: /etc/fincorp/agent.key"),
            Ok(SecretSource::File("/etc/fincorp/agent.key".into()))
        );
        for bad in [
            "{ env: A, file: b }",
            "{}",
            "{ value: hunter2 }",
            "{ env: '' }",
            "hunter2",
            "[hunter2]",
        ] {
            assert_eq!(source(bad), Err(SECRET_FORM), "{bad} must be refused");
        }
    }

    #[test]
    fn an_inline_secret_is_not_kept_so_it_cannot_be_echoed() {
        let r: SecretRef = serde_yaml::from_str("s3cret-inline-value").unwrap();
        assert!(!format!("{r:?}").contains("s3cret"));
    }

    #[test]
    fn a_missing_env_secret_is_named() {
        let err = SecretSource::Env("FINCORP_TEST_SURELY_UNSET_VAR".into())
            .resolve(Path::new("."))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable FINCORP_TEST_SURELY_UNSET_VAR is not set"
        );
    }
}
