//! HTTP plumbing shared by the clients: base-URL checks, response
//! classification helpers and error texts that never carry credentials.

use std::time::Duration;

use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap};

/// How much of a non-JSON error body goes into an error message.
const SNIPPET_CHARS: usize = 200;

/// Checks basic-auth credentials and a timeout from a client's config;
/// returns the password. Messages never echo the secret.
pub(crate) fn check_login(
    username: &str,
    password: &fincorp_api::config::Secret,
    timeout: Duration,
) -> Result<String, String> {
    if username.trim().is_empty() {
        return Err("username must not be empty".into());
    }
    if username.contains(':') {
        return Err("username must not contain ':' (basic auth)".into());
    }
    let password = password
        .expose_str()
        .map_err(|e| format!("password: {e}"))?
        .to_owned();
    if password.is_empty() {
        return Err("password must not be empty".into());
    }
    if timeout.is_zero() {
        return Err("timeout must be greater than zero".into());
    }
    Ok(password)
}

/// Checks a configured base URL and returns it ending in `/`. The message
/// never echoes the URL: it might carry credentials.
pub(crate) fn parse_base_url(url: &str, what: &str) -> Result<Url, String> {
    let mut base =
        Url::parse(url.trim()).map_err(|e| format!("the {what} url is not a valid URL: {e}"))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(format!(
            "the {what} url must be http or https, not {}",
            base.scheme()
        ));
    }
    if !base.username().is_empty() || base.password().is_some() {
        return Err(format!(
            "the {what} url must not contain credentials; use username and password"
        ));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(format!("the {what} url must not have a query or fragment"));
    }
    if base.cannot_be_a_base() {
        return Err(format!("the {what} url cannot have a path"));
    }
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// `base` joined with a relative API path (no leading `/`), keeping any
/// path prefix of the base (a proxy's).
pub(crate) fn endpoint(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let full = format!("{}{path}", base.path());
    url.set_path(&full);
    url
}

/// The chain of causes of a transport error, for the message.
pub(crate) fn error_chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

pub(crate) fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// Whether a success body is JSON, as opposed to an HTML page (a
/// hibernating ServiceNow instance, a proxy's login page).
pub(crate) fn looks_like_json(content_type: &str, body: &[u8]) -> bool {
    content_type.to_ascii_lowercase().contains("json")
        && body.trim_ascii_start().first() != Some(&b'<')
}

/// A short, printable, single-line excerpt of a body for an error message.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(SNIPPET_CHARS)
        .collect();
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// "Reason (content type): snippet" for a body that carried no structured
/// error.
pub(crate) fn unstructured_message(
    status: reqwest::StatusCode,
    content_type: &str,
    body: &[u8],
) -> String {
    let snippet = snippet(body);
    let reason = status.canonical_reason().unwrap_or("error");
    if snippet.is_empty() {
        reason.to_owned()
    } else if content_type.is_empty() {
        format!("{reason}: {snippet}")
    } else {
        format!("{reason} ({content_type}): {snippet}")
    }
}

/// A wait in whole milliseconds, for log fields.
pub(crate) fn millis(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)
}

/// The `Location` of a redirect, for the message (redirects are never
/// followed: one could turn a POST into a GET or leave the host).
pub(crate) fn redirect_message(headers: &HeaderMap) -> String {
    let location = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?");
    format!("unexpected redirect to {location}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_end_in_a_slash() {
        assert_eq!(
            parse_base_url("http://proxy:8080/sn", "x")
                .unwrap()
                .as_str(),
            "http://proxy:8080/sn/"
        );
        for (url, why) in [
            ("not a url", "not a valid URL"),
            ("ftp://x", "http or https"),
            ("https://admin:hunter2@x", "credentials"),
            ("https://x/?a=b", "query"),
            ("https://x/#f", "fragment"),
        ] {
            let err = parse_base_url(url, "instance").unwrap_err();
            assert!(err.contains(why), "{url}: {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let base = parse_base_url("https://vc.local/prefix/", "x").unwrap();
        assert_eq!(
            endpoint(&base, "api/session").as_str(),
            "https://vc.local/prefix/api/session"
        );
    }

    #[test]
    fn unstructured_messages_are_short_and_single_line() {
        use reqwest::StatusCode;
        assert_eq!(
            unstructured_message(StatusCode::BAD_GATEWAY, "", b""),
            "Bad Gateway"
        );
        assert_eq!(
            unstructured_message(StatusCode::BAD_GATEWAY, "text/html", b"<p>a\n\tb</p>"),
            "Bad Gateway (text/html): <p>a b</p>"
        );
        let long = "y".repeat(10_000);
        assert!(unstructured_message(StatusCode::BAD_GATEWAY, "", long.as_bytes()).len() < 300);
        assert!(looks_like_json("application/json", b" {}"));
        assert!(!looks_like_json("application/json", b" <html>"));
        assert!(!looks_like_json("text/html", b"{}"));
    }
}
