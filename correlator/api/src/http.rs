//! The HTTP client every FINCORP binary uses: reqwest over rustls with ring
//! as the crypto provider (no C toolchain, no downloaded binaries).

use std::time::Duration;

/// A client builder with the ring provider installed, our user agent, and
/// connect/overall timeouts. Callers add what else they need.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    // Installing twice is harmless; the first provider wins.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("fincorp/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
}

/// A ready client with the given overall timeout.
pub fn client(timeout: Duration) -> reqwest::Client {
    client_builder(timeout)
        .build()
        .expect("building an HTTP client with a valid TLS provider cannot fail")
}
