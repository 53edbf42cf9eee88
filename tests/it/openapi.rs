//! `/api/openapi.json` tells the truth: every `.route(...)` in `src/admin/`
//! is described with its methods, every described route is served (the
//! router answers it with something other than its own 404 or a 405),
//! and nothing else is described.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt;

use crate::common;

/// (path, METHOD) pairs the routers declare, read from the source.
fn declared() -> BTreeSet<(String, String)> {
    let route =
        regex::Regex::new(r#"\.route\(\s*"([^"]+)",\s*((?:[a-z_]+\([a-z_]+\)\s*\.?\s*)+),?\s*\)"#)
            .unwrap();
    let method = regex::Regex::new(r"([a-z]+)\([a-z_]+\)").unwrap();
    let mut files = Vec::new();
    collect(Path::new("src/admin"), &mut files);
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for m in route.captures_iter(&text) {
            for verb in method.captures_iter(&m[2]) {
                out.insert((m[1].to_string(), verb[1].to_ascii_uppercase()));
            }
        }
    }
    out
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            out.insert((path.clone(), method.to_ascii_uppercase()));
        }
    }
    out
}

/// A path with its parameters filled in.
fn concrete(path: &str) -> String {
    let names: BTreeMap<&str, &str> = [("vhost", "%2F"), ("port", "1"), ("unit", "days")].into();
    path.split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => names.get(name).copied().unwrap_or("x").to_string(),
                None => seg.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_nothing_else() {
    let server = common::start().await;
    let admin = warren::admin::router(server.broker().clone());
    let metrics = warren::admin::metrics_router(server.broker().clone());
    let get = Request::get("/api/openapi.json")
        .body(Body::empty())
        .unwrap();
    let response = admin.clone().oneshot(get).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");

    let declared = declared();
    let documented = documented(&doc);
    assert!(declared.len() > 100, "only {} routes found", declared.len());
    let undocumented: Vec<_> = declared.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&declared).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from openapi.json: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "described but not routed: {unserved:?}"
    );

    for (path, method) in &documented {
        let router = if path.starts_with("/metrics") {
            &metrics
        } else {
            &admin
        };
        let request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(concrete(path))
            .header("authorization", "Basic Z3Vlc3Q6Z3Vlc3Q=")
            .body(Body::from("{}"))
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let unrouted = response
            .extensions()
            .get::<warren::admin::NoRoute>()
            .is_some();
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !unrouted,
            "{method} {path} is described but not served ({status})"
        );
    }
    server.shutdown().await;
}
