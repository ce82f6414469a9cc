//! OAuth for the ServiceNow client: the token shared by a client and its
//! clones, the grant forms, and reading `/oauth_token.do` answers. The
//! client sends the requests; this module decides what to send and when a
//! token is still good.
//!
//! Followed: ServiceNow's "OAuth API request parameters": `POST
//! /oauth_token.do`, `application/x-www-form-urlencoded`, `grant_type`
//! `password` (with `username`, `password`) or `refresh_token` (with
//! `refresh_token`), always `client_id` and `client_secret`. The answer is
//! JSON `{"access_token", "refresh_token", "scope", "token_type": "Bearer",
//! "expires_in"}`; a refused grant is 401
//! `{"error_description": "access_denied", "error": "server_error"}`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// ServiceNow's default access token lifespan (1,800 s), used when an
/// answer has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(1800);
/// Tokens are renewed at most this long before they expire.
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// A longer `expires_in` is taken as this (a year), so no answer can
/// overflow the clock arithmetic.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long before expiry a token is renewed: a tenth of its lifetime, at
/// most a minute (a 30-minute token is renewed after 29 minutes).
pub(crate) fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(MAX_MARGIN)
}

/// Which grant to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grant {
    Password,
    Refresh,
}

impl Grant {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::Refresh => "refresh_token",
        }
    }
}

/// A token answer, checked.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) lifetime: Duration,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

/// Reads a `/oauth_token.do` answer. The message never includes a token.
pub(crate) fn token_response(doc: &Value) -> Result<TokenResponse, String> {
    let text = |k: &str| {
        doc.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let access_token = text("access_token").ok_or("the answer has no access_token")?;
    match text("token_type") {
        Some(t) if t.eq_ignore_ascii_case("bearer") => {}
        Some(t) => return Err(format!("token_type is {t:?}, not \"Bearer\"")),
        None => return Err("the answer has no token_type".into()),
    }
    let lifetime = match doc.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_LIFETIME,
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_secs)
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| Duration::from_secs_f64(f.min(MAX_LIFETIME.as_secs_f64())))
            })
            .ok_or_else(|| format!("expires_in {n} is not a number of seconds"))?,
        Some(Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| format!("expires_in {s:?} is not a number of seconds"))?,
        Some(other) => return Err(format!("expires_in {other} is not a number of seconds")),
    };
    Ok(TokenResponse {
        access_token,
        refresh_token: text("refresh_token"),
        lifetime: lifetime.clamp(Duration::from_secs(1), MAX_LIFETIME),
    })
}

/// The token in use, and when to renew it.
struct Token {
    access: String,
    refresh: Option<String>,
    renew_at: Instant,
    generation: u64,
}

/// An access token to send: the header value, and which token it was (so a
/// 401 invalidates that token only, not a newer one another task got).
pub(crate) struct Bearer {
    pub(crate) header: String,
    pub(crate) generation: u64,
}

/// The OAuth application, the resource owner's credentials and the current
/// token. Shared by a client's clones; never shows a secret in `Debug`.
pub(crate) struct TokenSource {
    client_id: String,
    client_secret: String,
    username: String,
    password: String,
    current: Mutex<Option<Token>>,
    /// Held while a grant is under way, so concurrent callers wait for one
    /// grant instead of each asking for a token.
    pub(crate) fetching: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSource")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl TokenSource {
    pub(crate) fn new(
        client_id: String,
        client_secret: String,
        username: String,
        password: String,
    ) -> Self {
        Self {
            client_id,
            client_secret,
            username,
            password,
            current: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Token>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current token if it is not due for renewal at `now`.
    pub(crate) fn usable(&self, now: Instant) -> Option<Bearer> {
        self.lock()
            .as_ref()
            .filter(|t| now < t.renew_at)
            .map(|t| Bearer {
                header: format!("Bearer {}", t.access),
                generation: t.generation,
            })
    }

    /// The grant to ask for next: a refresh when a refresh token is held.
    pub(crate) fn next_grant(&self) -> Grant {
        match self.lock().as_ref().and_then(|t| t.refresh.as_ref()) {
            Some(_) => Grant::Refresh,
            None => Grant::Password,
        }
    }

    /// The form body of a grant request (secret: never log it). `None` for
    /// a refresh grant when no refresh token is held.
    pub(crate) fn form(&self, grant: Grant) -> Option<String> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", grant.name())
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret);
        match grant {
            Grant::Password => {
                form.append_pair("username", &self.username)
                    .append_pair("password", &self.password);
            }
            Grant::Refresh => {
                let guard = self.lock();
                let refresh = guard.as_ref().and_then(|t| t.refresh.as_deref())?;
                form.append_pair("refresh_token", refresh);
            }
        }
        Some(form.finish())
    }

    /// Keeps a new token, asked for at `requested_at` (its lifetime counts
    /// from then, so clock time spent waiting for the answer is not lost).
    /// A refresh answer without a refresh token keeps the old one.
    pub(crate) fn store(&self, response: TokenResponse, requested_at: Instant) -> Bearer {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let renew_at = requested_at + response.lifetime - refresh_margin(response.lifetime);
        let mut current = self.lock();
        let refresh = response
            .refresh_token
            .or_else(|| current.as_ref().and_then(|t| t.refresh.clone()));
        let bearer = Bearer {
            header: format!("Bearer {}", response.access_token),
            generation,
        };
        *current = Some(Token {
            access: response.access_token,
            refresh,
            renew_at,
            generation,
        });
        bearer
    }

    /// The instance refused token `generation` (401): renew it before the
    /// next use, keeping the refresh token. A newer token is left alone.
    pub(crate) fn invalidate(&self, generation: u64, now: Instant) {
        if let Some(t) = self.lock().as_mut().filter(|t| t.generation == generation) {
            t.renew_at = now;
        }
    }

    /// The refresh token was refused: forget it, so the next grant is a
    /// password grant.
    pub(crate) fn drop_refresh_token(&self) {
        if let Some(t) = self.lock().as_mut() {
            t.refresh = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> TokenSource {
        TokenSource::new(
            "client-1".into(),
            "s3cret&=".into(),
            "fincorp operator".into(),
            "pa ss".into(),
        )
    }

    fn answer(lifetime_s: u64, refresh: Option<&str>) -> TokenResponse {
        TokenResponse {
            access_token: "at".into(),
            refresh_token: refresh.map(str::to_owned),
            lifetime: Duration::from_secs(lifetime_s),
        }
    }

    #[test]
    fn answers_are_checked_and_never_shown() {
        let ok = token_response(&json!({"access_token": "abc", "refresh_token": "def", "scope": "useraccount", "token_type": "Bearer", "expires_in": 1799})).unwrap();
        assert_eq!(ok.lifetime, Duration::from_secs(1799));
        assert_eq!(ok.refresh_token.as_deref(), Some("def"));
        assert!(!format!("{ok:?}").contains("abc"));
        let no_expiry =
            token_response(&json!({"access_token": "abc", "token_type": "bearer"})).unwrap();
        assert_eq!(no_expiry.lifetime, DEFAULT_LIFETIME);
        assert_eq!(no_expiry.refresh_token, None);
        let huge = token_response(
            &json!({"access_token": "a", "token_type": "Bearer", "expires_in": 1e300}),
        )
        .unwrap();
        assert_eq!(huge.lifetime, MAX_LIFETIME, "clamped, no overflow");
        let huge = token_response(
            &json!({"access_token": "a", "token_type": "Bearer", "expires_in": u64::MAX}),
        )
        .unwrap();
        assert_eq!(huge.lifetime, MAX_LIFETIME);
        let text_expiry = token_response(
            &json!({"access_token": "abc", "token_type": "Bearer", "expires_in": "60"}),
        )
        .unwrap();
        assert_eq!(text_expiry.lifetime, Duration::from_secs(60));
        for (bad, why) in [
            (json!({"token_type": "Bearer"}), "access_token"),
            (json!({"access_token": "a"}), "token_type"),
            (json!({"access_token": "a", "token_type": "MAC"}), "MAC"),
            (
                json!({"access_token": "a", "token_type": "Bearer", "expires_in": -5}),
                "expires_in",
            ),
        ] {
            let err = token_response(&bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn forms_are_url_encoded_per_grant() {
        let s = source();
        assert_eq!(
            s.form(Grant::Password).unwrap(),
            "grant_type=password&client_id=client-1&client_secret=s3cret%26%3D&username=fincorp+operator&password=pa+ss"
        );
        assert_eq!(s.next_grant(), Grant::Password);
        assert_eq!(s.form(Grant::Refresh), None, "no refresh token yet");
        s.store(answer(1800, Some("rt/1")), Instant::now());
        assert_eq!(s.next_grant(), Grant::Refresh);
        assert_eq!(
            s.form(Grant::Refresh).unwrap(),
            "grant_type=refresh_token&client_id=client-1&client_secret=s3cret%26%3D&refresh_token=rt%2F1"
        );
        assert!(!format!("{s:?}").contains("s3cret"));
        assert!(!format!("{s:?}").contains("pa ss"));
    }

    #[test]
    fn tokens_are_renewed_before_expiry_and_after_a_401() {
        let s = source();
        let t0 = Instant::now();
        assert!(s.usable(t0).is_none());
        let first = s.store(answer(100, Some("rt")), t0);
        assert_eq!(first.header, "Bearer at");
        // 100 s lifetime: renewed 10 s early.
        assert!(s.usable(t0 + Duration::from_secs(89)).is_some());
        assert!(s.usable(t0 + Duration::from_secs(90)).is_none());
        assert_eq!(refresh_margin(Duration::from_secs(1800)), MAX_MARGIN);

        // A 401 for an older token does not touch the newer one.
        let second = s.store(answer(100, None), t0);
        assert_eq!(s.next_grant(), Grant::Refresh, "the refresh token is kept");
        s.invalidate(first.generation, t0);
        assert!(s.usable(t0).is_some());
        s.invalidate(second.generation, t0);
        assert!(s.usable(t0).is_none());
        s.drop_refresh_token();
        assert_eq!(s.next_grant(), Grant::Password);
    }
}
