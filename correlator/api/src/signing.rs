//! HMAC-SHA256 signing of agent ↔ correlator traffic (ring).
//!
//! **Requests** (agent → correlator) carry four headers. The signature covers
//! a domain tag, the method, the path, the timestamp, the nonce and the
//! SHA-256 of the body, so a signature cannot be moved to another endpoint,
//! replayed later (timestamp window) or replayed within the window (nonce
//! cache). The correlator checks them in that order and only remembers a nonce
//! once the signature is valid, so forged requests cannot fill the cache.
//!
//! **Commands** (correlator → agent) are signed over their exact JSON text
//! with a different domain tag, so no request signature is ever a valid
//! command signature. Replays of commands are harmless: each command has an
//! id the agent executes at most once, and an expiry.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use thiserror::Error;

use crate::UnixMs;
use crate::wire::{Command, SignedCommand};

pub const HEADER_KEY_ID: &str = "x-fincorp-key-id";
pub const HEADER_TIMESTAMP: &str = "x-fincorp-timestamp";
pub const HEADER_NONCE: &str = "x-fincorp-nonce";
pub const HEADER_SIGNATURE: &str = "x-fincorp-signature";

const REQUEST_DOMAIN: &str = "fincorp-request-v1";
const COMMAND_DOMAIN: &str = "fincorp-command-v1";
/// Shortest secret accepted: 128 bits.
pub const MIN_SECRET_BYTES: usize = 16;
/// Upper bound on remembered nonces; beyond it new requests are refused
/// rather than letting memory grow without limit.
const MAX_NONCES: usize = 1_000_000;

/// Why a request or command failed authentication. Every variant maps to 401.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed header {0}")]
    MalformedHeader(&'static str),
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    #[error("timestamp outside the allowed skew of {max_skew_ms} ms (off by {off_ms} ms)")]
    Stale { off_ms: i64, max_skew_ms: i64 },
    #[error("bad signature")]
    BadSignature,
    #[error("nonce already used (replay)")]
    Replayed,
    #[error("replay cache is full")]
    NonceCacheFull,
    #[error("command expired at {0}")]
    Expired(UnixMs),
    #[error("command payload is not valid: {0}")]
    BadPayload(String),
}

/// Why a key could not be built.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key id must not be empty")]
    EmptyId,
    #[error("secret for key {id:?} is {len} bytes; at least {MIN_SECRET_BYTES} are required")]
    TooShort { id: String, len: usize },
}

/// A named HMAC key. Its `Debug` never shows the secret.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    key: hmac::Key,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Builds a key; surrounding whitespace in `secret` (a trailing newline in
    /// a secret file) is ignored.
    pub fn new(id: impl Into<String>, secret: &[u8]) -> Result<Self, KeyError> {
        let id = id.into();
        if id.is_empty() {
            return Err(KeyError::EmptyId);
        }
        let secret = secret.trim_ascii();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::TooShort {
                id,
                len: secret.len(),
            });
        }
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            id,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// The four signature headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSignature {
    pub key_id: String,
    pub timestamp_ms: UnixMs,
    pub nonce: String,
    pub signature: String,
}

impl RequestSignature {
    /// The headers to attach, as (name, value) pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_KEY_ID, self.key_id.clone()),
            (HEADER_TIMESTAMP, self.timestamp_ms.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }

    /// Reads the headers through `get`, which returns a header's value by name.
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, AuthError> {
        let need = |name: &'static str| get(name).ok_or(AuthError::MissingHeader(name));
        let timestamp_ms = need(HEADER_TIMESTAMP)?
            .parse()
            .map_err(|_| AuthError::MalformedHeader(HEADER_TIMESTAMP))?;
        let nonce = need(HEADER_NONCE)?;
        if nonce.len() < 16 || nonce.len() > 128 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::MalformedHeader(HEADER_NONCE));
        }
        Ok(Self {
            key_id: need(HEADER_KEY_ID)?.to_owned(),
            timestamp_ms,
            nonce: nonce.to_owned(),
            signature: need(HEADER_SIGNATURE)?.to_owned(),
        })
    }
}

/// `n` random bytes from the OS, hex-encoded.
pub fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the OS random number generator failed");
    hex::encode(buf)
}

fn request_message(
    method: &str,
    path: &str,
    timestamp_ms: UnixMs,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let body_hash = ring::digest::digest(&ring::digest::SHA256, body);
    format!(
        "{REQUEST_DOMAIN}\n{method}\n{path}\n{timestamp_ms}\n{nonce}\n{}",
        hex::encode(body_hash.as_ref())
    )
    .into_bytes()
}

/// Signs a request with a fresh random nonce.
pub fn sign_request(
    key: &SigningKey,
    method: &str,
    path: &str,
    body: &[u8],
    now_ms: UnixMs,
) -> RequestSignature {
    let nonce = random_hex(16);
    let tag = hmac::sign(
        &key.key,
        &request_message(method, path, now_ms, &nonce, body),
    );
    RequestSignature {
        key_id: key.id.clone(),
        timestamp_ms: now_ms,
        nonce,
        signature: hex::encode(tag.as_ref()),
    }
}

/// Signs a command for an agent.
pub fn sign_command(key: &SigningKey, command: &Command) -> SignedCommand {
    let payload = serde_json::to_string(command).expect("commands always serialise");
    let tag = hmac::sign(&key.key, &command_message(&payload));
    SignedCommand {
        key_id: key.id.clone(),
        payload,
        signature: hex::encode(tag.as_ref()),
    }
}

fn command_message(payload: &str) -> Vec<u8> {
    format!("{COMMAND_DOMAIN}\n{payload}").into_bytes()
}

fn verify_tag(key: &hmac::Key, message: &[u8], signature_hex: &str) -> Result<(), AuthError> {
    let tag = hex::decode(signature_hex).map_err(|_| AuthError::BadSignature)?;
    hmac::verify(key, message, &tag).map_err(|_| AuthError::BadSignature)
}

/// Checks signed requests: known key, fresh timestamp, valid signature,
/// unseen nonce. One per correlator, shared by all handlers.
pub struct Verifier {
    keys: HashMap<String, SigningKey>,
    max_skew_ms: i64,
    nonces: Mutex<NonceCache>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field("max_skew_ms", &self.max_skew_ms)
            .finish()
    }
}

#[derive(Default)]
struct NonceCache {
    /// nonce → the time after which it can be forgotten.
    seen: HashMap<String, UnixMs>,
    next_purge_ms: UnixMs,
}

impl Verifier {
    pub fn new(keys: impl IntoIterator<Item = SigningKey>, max_skew_ms: i64) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.id.clone(), k)).collect(),
            max_skew_ms,
            nonces: Mutex::new(NonceCache::default()),
        }
    }

    /// The key used to sign commands: the one with the given id.
    pub fn key(&self, id: &str) -> Option<&SigningKey> {
        self.keys.get(id)
    }

    /// Verifies one request and remembers its nonce. Returns the key id.
    pub fn verify_request(
        &self,
        method: &str,
        path: &str,
        sig: &RequestSignature,
        body: &[u8],
        now_ms: UnixMs,
    ) -> Result<String, AuthError> {
        let key = self
            .keys
            .get(&sig.key_id)
            .ok_or_else(|| AuthError::UnknownKey(sig.key_id.clone()))?;
        let off_ms = now_ms.saturating_sub(sig.timestamp_ms);
        if off_ms.abs() > self.max_skew_ms {
            return Err(AuthError::Stale {
                off_ms,
                max_skew_ms: self.max_skew_ms,
            });
        }
        let message = request_message(method, path, sig.timestamp_ms, &sig.nonce, body);
        verify_tag(&key.key, &message, &sig.signature)?;

        let mut cache = self.nonces.lock().unwrap_or_else(|e| e.into_inner());
        if now_ms >= cache.next_purge_ms {
            cache.seen.retain(|_, forget_at| *forget_at > now_ms);
            cache.next_purge_ms = now_ms + self.max_skew_ms.max(1_000);
        }
        if cache.seen.contains_key(&sig.nonce) {
            return Err(AuthError::Replayed);
        }
        if cache.seen.len() >= MAX_NONCES {
            return Err(AuthError::NonceCacheFull);
        }
        // A nonce must be remembered for as long as its timestamp is acceptable.
        cache
            .seen
            .insert(sig.nonce.clone(), sig.timestamp_ms + self.max_skew_ms + 1);
        Ok(key.id.clone())
    }
}

/// Verifies a command's signature and expiry, then parses it.
pub fn verify_command(
    key: &SigningKey,
    signed: &SignedCommand,
    now_ms: UnixMs,
) -> Result<Command, AuthError> {
    if signed.key_id != key.id {
        return Err(AuthError::UnknownKey(signed.key_id.clone()));
    }
    verify_tag(
        &key.key,
        &command_message(&signed.payload),
        &signed.signature,
    )?;
    let command: Command =
        serde_json::from_str(&signed.payload).map_err(|e| AuthError::BadPayload(e.to_string()))?;
    if now_ms > command.expires_at_ms {
        return Err(AuthError::Expired(command.expires_at_ms));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{CommandAction, Resource};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn key() -> SigningKey {
        SigningKey::new("fleet", SECRET).unwrap()
    }

    fn verifier() -> Verifier {
        Verifier::new([key()], 30_000)
    }

    #[test]
    fn a_signed_request_verifies_once_then_is_a_replay() {
        let v = verifier();
        let sig = sign_request(&key(), "POST", "/api/v1/ingest/agent", b"{}", 1_000_000);
        assert_eq!(
            v.verify_request("POST", "/api/v1/ingest/agent", &sig, b"{}", 1_000_500),
            Ok("fleet".into())
        );
        assert_eq!(
            v.verify_request("POST", "/api/v1/ingest/agent", &sig, b"{}", 1_000_600),
            Err(AuthError::Replayed)
        );
    }

    #[test]
    fn tampering_with_body_path_method_or_timestamp_breaks_the_signature() {
        let v = verifier();
        let sig = sign_request(&key(), "POST", "/a", b"body", 1_000_000);
        assert_eq!(
            v.verify_request("POST", "/a", &sig, b"bodY", 1_000_000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify_request("POST", "/b", &sig, b"body", 1_000_000),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify_request("PUT", "/a", &sig, b"body", 1_000_000),
            Err(AuthError::BadSignature)
        );
        let shifted = RequestSignature {
            timestamp_ms: 1_000_001,
            ..sig.clone()
        };
        assert_eq!(
            v.verify_request("POST", "/a", &shifted, b"body", 1_000_000),
            Err(AuthError::BadSignature)
        );
        // None of the failures consumed the nonce.
        assert!(
            v.verify_request("POST", "/a", &sig, b"body", 1_000_000)
                .is_ok()
        );
    }

    #[test]
    fn a_wrong_key_is_a_bad_signature_and_an_unknown_id_is_named() {
        let v = verifier();
        let other = SigningKey::new("fleet", b"ffffffffffffffffffffffffffffffff").unwrap();
        let sig = sign_request(&other, "POST", "/a", b"", 5_000);
        assert_eq!(
            v.verify_request("POST", "/a", &sig, b"", 5_000),
            Err(AuthError::BadSignature)
        );
        let stranger = SigningKey::new("intruder", SECRET).unwrap();
        let sig = sign_request(&stranger, "POST", "/a", b"", 5_000);
        assert_eq!(
            v.verify_request("POST", "/a", &sig, b"", 5_000),
            Err(AuthError::UnknownKey("intruder".into()))
        );
    }

    #[test]
    fn stale_and_future_timestamps_are_refused() {
        let v = verifier();
        let sig = sign_request(&key(), "POST", "/a", b"", 1_000_000);
        assert!(matches!(
            v.verify_request("POST", "/a", &sig, b"", 1_030_001),
            Err(AuthError::Stale { .. })
        ));
        assert!(matches!(
            v.verify_request("POST", "/a", &sig, b"", 969_999),
            Err(AuthError::Stale { .. })
        ));
    }

    #[test]
    fn headers_round_trip_and_bad_nonces_are_rejected() {
        let sig = sign_request(&key(), "POST", "/a", b"", 42);
        let headers = sig.headers();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(RequestSignature::from_headers(get), Ok(sig));
        let bad = |name: &str| match name {
            HEADER_NONCE => Some("not-hex-at-all!!"),
            _ => Some("1"),
        };
        assert_eq!(
            RequestSignature::from_headers(bad),
            Err(AuthError::MalformedHeader(HEADER_NONCE))
        );
        assert_eq!(
            RequestSignature::from_headers(|_| None),
            Err(AuthError::MissingHeader(HEADER_TIMESTAMP))
        );
    }

    #[test]
    fn short_secrets_are_refused_and_debug_hides_the_secret() {
        assert!(matches!(
            SigningKey::new("k", b"short\n"),
            Err(KeyError::TooShort { len: 5, .. })
        ));
        assert!(!format!("{:?}", key()).contains("0123"));
    }

    fn command(expires_at_ms: UnixMs) -> Command {
        Command {
            id: "r1:s1".into(),
            host: "h1".into(),
            issued_at_ms: 0,
            expires_at_ms,
            action: CommandAction::Reallocate {
                app: "A".into(),
                resource: Resource::Cpu,
                increase_pct: 20.0,
            },
        }
    }

    #[test]
    fn commands_verify_and_tampering_or_expiry_is_refused() {
        let signed = sign_command(&key(), &command(10_000));
        assert_eq!(verify_command(&key(), &signed, 9_000), Ok(command(10_000)));
        assert_eq!(
            verify_command(&key(), &signed, 10_001),
            Err(AuthError::Expired(10_000))
        );
        let tampered = SignedCommand {
            payload: signed.payload.replace("20.0", "900.0"),
            ..signed.clone()
        };
        assert_eq!(
            verify_command(&key(), &tampered, 9_000),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn a_request_signature_is_never_a_command_signature() {
        let payload = serde_json::to_string(&command(10_000)).unwrap();
        let req = sign_request(&key(), "POST", "/a", payload.as_bytes(), 0);
        let forged = SignedCommand {
            key_id: "fleet".into(),
            payload,
            signature: req.signature,
        };
        assert_eq!(
            verify_command(&key(), &forged, 0),
            Err(AuthError::BadSignature)
        );
    }
}
