//! HTTP Basic authentication against the broker's users, as the management
//! plugin does it: the user needs a management-capable tag, and loopback-only
//! users (guest) must come from localhost.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ApiError;
use crate::broker::Broker;
use crate::broker::auth::User;

const MANAGEMENT_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management"];

/// An authenticated management user.
#[derive(Debug)]
pub struct ManagementUser(#[allow(dead_code)] pub User);

impl FromRequestParts<Arc<Broker>> for ManagementUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        let encoded = header
            .strip_prefix("Basic ")
            .ok_or(ApiError::Unauthenticated)?;
        let decoded = BASE64
            .decode(encoded.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or(ApiError::NotAuthorized("Login failed"))?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or(ApiError::NotAuthorized("Login failed"))?;
        let user = broker
            .users
            .authenticate(name, password)
            .ok_or(ApiError::NotAuthorized("Login failed"))?;
        if !user
            .tags
            .iter()
            .any(|t| MANAGEMENT_TAGS.contains(&t.as_str()))
        {
            return Err(ApiError::NotAuthorized("Not management user"));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        if let Some(peer) = peer
            && !broker.allowed_from(name, &peer)
        {
            return Err(ApiError::NotAuthorized(
                "User can only log in via localhost",
            ));
        }
        Ok(ManagementUser(user))
    }
}
