//! Who is calling: HTTP Basic authentication against the broker's users,
//! as the management plugin does it, and what their tags let them see.
//!
//! A user needs one of the management tags to use the API at all.
//! `management` users see the vhosts they have permissions on and their
//! own connections; `policymaker` adds policies and parameters there;
//! `monitoring` sees every vhost, connection and channel and the node;
//! `administrator` may do everything. Loopback-only users (guest) must come
//! from localhost.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ApiError;
use crate::broker::audit::Actor;
use crate::broker::auth::{Access, User};
use crate::broker::{Broker, VHost};
use crate::exchange::{Exchange, ExchangeKind};

const MANAGEMENT_TAGS: &[&str] = &["administrator", "monitoring", "policymaker", "management"];

/// An authenticated management user.
#[derive(Debug)]
pub struct Caller {
    pub user: User,
    pub peer: Option<SocketAddr>,
    broker: Arc<Broker>,
}

impl FromRequestParts<Arc<Broker>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, broker: &Arc<Broker>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthenticated)?;
        // Another scheme (a bearer token) is a failed login.
        let encoded = header.strip_prefix("Basic ").ok_or(ApiError::LoginFailed)?;
        let decoded = BASE64
            .decode(encoded.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .ok_or_else(|| ApiError::BadRequest("malformed Basic credentials".into()))?;
        let (name, password) = decoded.split_once(':').ok_or(ApiError::LoginFailed)?;
        let user = broker
            .users
            .authenticate(name, password)
            .ok_or(ApiError::LoginFailed)?;
        if !user
            .tags
            .iter()
            .any(|t| MANAGEMENT_TAGS.contains(&t.as_str()))
        {
            return Err(refused("Not management user"));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        if let Some(peer) = peer
            && !broker.allowed_from(name, &peer)
        {
            return Err(refused("User can only log in via localhost"));
        }
        Ok(Caller {
            user,
            peer,
            broker: broker.clone(),
        })
    }
}

fn refused(reason: &str) -> ApiError {
    ApiError::NotAuthorised(reason.to_string())
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.user.has_tag(tag)
    }

    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// `monitoring` or `administrator`: sees everything.
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    pub fn admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(refused("Not administrator user"))
        }
    }

    pub fn monitor(&self) -> Result<(), ApiError> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(refused("Not monitor user"))
        }
    }

    /// `policymaker` or `administrator`, with access to `vhost`.
    pub fn policymaker(&self, vhost: &str) -> Result<(), ApiError> {
        if !(self.is_admin() || self.has("policymaker")) {
            return Err(refused("User not authorised to access object"));
        }
        if self.broker.vhost(vhost).is_none() {
            return Err(ApiError::Missing("vhost_not_found".into()));
        }
        self.vhost(vhost)
            .map(|_| ())
            .map_err(|_| refused("User not authorised to access object"))
    }

    /// Whether the caller may see `vhost` and what is in it.
    pub fn sees_vhost(&self, vhost: &str) -> bool {
        self.is_monitor() || self.broker.users.can_access_vhost(&self.user.name, vhost)
    }

    /// Whether the caller may see objects owned by `user` (connections,
    /// channels): their own, or everyone's for monitors.
    pub fn sees_user(&self, user: &str) -> bool {
        self.is_monitor() || self.user.name == user
    }

    /// A vhost the caller may use: 404 if there is none, 401 if they have
    /// no permissions on it.
    pub fn vhost(&self, name: &str) -> Result<Arc<VHost>, ApiError> {
        let v = self.broker.vhost(name).ok_or_else(ApiError::not_found)?;
        if self.is_admin() || self.broker.users.can_access_vhost(&self.user.name, name) {
            Ok(v)
        } else {
            Err(refused("User not authorised to access virtual host"))
        }
    }

    /// Vhosts the caller may see, by name.
    pub fn visible_vhosts(&self) -> Vec<Arc<VHost>> {
        let mut v: Vec<Arc<VHost>> = self
            .broker
            .vhosts()
            .into_iter()
            .filter(|v| self.sees_vhost(&v.name))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// A vhost to create something in: 404 `vhost_not_found` if there is
    /// none (RabbitMQ's answer to a PUT into a missing vhost).
    pub fn vhost_to_change(&self, name: &str) -> Result<Arc<VHost>, ApiError> {
        if self.broker.vhost(name).is_none() {
            return Err(ApiError::Missing("vhost_not_found".into()));
        }
        self.vhost(name)
    }

    /// The vhosts a list route covers: the one named, or all the caller
    /// sees.
    pub fn vhosts_for(&self, name: Option<&str>) -> Result<Vec<Arc<VHost>>, ApiError> {
        match name {
            Some(n) => Ok(vec![self.vhost(n)?]),
            None => Ok(self.visible_vhosts()),
        }
    }

    /// One access right on a resource of `vhost`, as an AMQP client of
    /// this user would be checked (administrators too: tags grant nothing
    /// inside a vhost). RabbitMQ's refusal is a 401 with its AMQP text.
    pub fn check(
        &self,
        vhost: &str,
        access: Access,
        kind: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        self.broker
            .users
            .check(&self.user.name, vhost, access, kind, name)
            .map_err(ApiError::from)
    }

    /// A topic permission check, on topic exchanges only.
    pub fn check_topic(
        &self,
        vhost: &str,
        exchange: &Exchange,
        access: Access,
        key: &str,
    ) -> Result<(), ApiError> {
        if exchange.kind != ExchangeKind::Topic {
            return Ok(());
        }
        self.broker
            .users
            .check_topic(&self.user.name, vhost, exchange.name.as_str(), access, key)
            .map_err(ApiError::from)
    }

    /// The caller, for the audit trail.
    pub fn actor(&self) -> Actor {
        Actor {
            user: self.user.name.clone(),
            peer: self.peer,
            via: "http",
        }
    }
}
