//! The web dashboard: one page, its script and its style, embedded in the
//! binary (nothing on disk, nothing from a CDN), plus `GET /api/v1/hosts`,
//! the JSON endpoint that exists for it.
//!
//! The assets hold no data, so they are served without a token
//! ([`is_asset`] is what `api::auth::required_role` asks). The script reads
//! everything through the JSON API, polling every two seconds, and sends the
//! operator's bearer token: it asks for one on the first 401 and keeps it in
//! the browser tab's `sessionStorage`. Data endpoints stay protected.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

mod hosts;

pub use hosts::hosts;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("app.js"),
    },
    Asset {
        path: "/ui/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("style.css"),
    },
];

/// Same-origin only: the page loads nothing from elsewhere, and nothing may
/// frame it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// Strong ETags (a prefix of the SHA-256 of each body), so a browser
/// revalidates with a 304 instead of downloading again.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let d = ring::digest::digest(&ring::digest::SHA256, a.body.as_bytes());
            format!("\"{}\"", hex::encode(&d.as_ref()[..12]))
        })
        .collect()
});

/// A path the dashboard serves without a token (GET or HEAD).
pub fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// The routes of the static files; `/api/v1/hosts` is routed with the API.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS
        .iter()
        .enumerate()
        .fold(Router::new(), |router, (i, asset)| {
            router.route(
                asset.path,
                get(move |headers: HeaderMap| async move { serve(i, &headers) }),
            )
        })
}

fn serve(i: usize, headers: &HeaderMap) -> Response {
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let common = [
        (header::ETAG, HeaderValue::from_str(etag).expect("hex")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::get(path);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let resp = routes::<()>()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_revalidates_with_304() {
        for asset in &ASSETS {
            let (status, headers, body) = get(asset.path, None).await;
            assert_eq!(status, StatusCode::OK, "{}", asset.path);
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(body, asset.body);
            assert!(
                headers[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap()
                    .contains("default-src 'none'")
            );
            let etag = headers[header::ETAG].to_str().unwrap().to_owned();
            let (status, _, body) = get(asset.path, Some(&format!("\"other\", {etag}"))).await;
            assert_eq!(status, StatusCode::NOT_MODIFIED, "{}", asset.path);
            assert!(body.is_empty());
            let (status, _, _) = get(asset.path, Some("\"stale\"")).await;
            assert_eq!(status, StatusCode::OK);
        }
        assert!(is_asset("/") && is_asset("/ui/app.js"));
        assert!(!is_asset("/ui/") && !is_asset("/api/v1/hosts") && !is_asset("/ui/x.js"));
    }

    #[test]
    fn the_page_loads_only_its_own_assets_and_nothing_from_elsewhere() {
        let page = ASSETS[0].body;
        for referenced in ["/ui/app.js", "/ui/style.css"] {
            assert!(page.contains(referenced) && is_asset(referenced));
        }
        for asset in &ASSETS {
            for remote in ["http://", "https://", "//cdn", "@import"] {
                assert!(
                    !asset.body.contains(remote),
                    "{} refers to {remote}: the dashboard must work without internet",
                    asset.path
                );
            }
        }
    }

    #[test]
    fn the_script_never_parses_api_data_as_html() {
        let script = ASSETS[1].body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
    }
}
