//! Live connections and channels, and the limits on them: the node's
//! `limits.max_connections`, each vhost's `max-connections` and each user's
//! `max-connections` and `max-channels`, refused with RabbitMQ's texts
//! (530 NOT_ALLOWED) before the newcomer gets anything. Also closing
//! connections on the broker's initiative (a vhost or user deleted), with
//! 320 CONNECTION_FORCED and the reason.

use std::sync::Arc;

use super::limits::reached;
use super::{Broker, ClientConnection};
use crate::error::{AmqpError, AmqpResult};
use crate::metrics::ChurnEvent;
use crate::queue::ConnectionId;

impl Broker {
    /// Admit a connection at `connection.open`: check the node, vhost and
    /// user connection limits (in RabbitMQ's order) and register it, in one
    /// step so that concurrent opens cannot both take the last place.
    pub fn admit_connection(&self, conn: Arc<ClientConnection>) -> AmqpResult<()> {
        let node_max = self.config.limits.max_connections;
        let vhost_max = self
            .vhost(&conn.vhost)
            .and_then(|v| v.limits().max_connections);
        let user_max = self
            .users
            .user(&conn.user)
            .and_then(|u| u.limits.max_connections);
        let mut table = self.connections.lock();
        if node_max != 0 && table.len() >= node_max as usize {
            return Err(AmqpError::not_allowed(format!(
                "connection refused: node connection limit ({node_max}) is reached"
            )));
        }
        let in_vhost = table.values().filter(|c| c.vhost == conn.vhost).count();
        if let Some(limit) = reached(vhost_max, in_vhost) {
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{}' refused for user '{}': connection limit ({limit}) is reached",
                conn.vhost, conn.user
            )));
        }
        let of_user = table.values().filter(|c| c.user == conn.user).count();
        if let Some(limit) = reached(user_max, of_user) {
            return Err(AmqpError::not_allowed(format!(
                "connection refused for user '{}': user connection limit ({limit}) is reached",
                conn.user
            )));
        }
        self.events.connection_created(&self.node_name, &conn);
        table.insert(conn.id, conn);
        drop(table);
        self.metrics.connections.increment(1.0);
        self.metrics.churn(ChurnEvent::ConnectionCreated);
        Ok(())
    }

    pub fn unregister_connection(&self, id: ConnectionId) {
        let gone = self.connections.lock().remove(&id);
        if let Some(conn) = gone {
            self.events.connection_closed(&self.node_name, &conn);
            self.metrics.connections.decrement(1.0);
            self.metrics.churn(ChurnEvent::ConnectionClosed);
        }
    }

    pub fn connection(&self, id: ConnectionId) -> Option<Arc<ClientConnection>> {
        self.connections.lock().get(&id).cloned()
    }

    pub fn connections(&self) -> Vec<Arc<ClientConnection>> {
        self.connections.lock().values().cloned().collect()
    }

    /// Count a channel `user` opens, unless it would pass the user's
    /// `max-channels`.
    pub fn open_channel(&self, user: &str) -> AmqpResult<()> {
        let limit = self.users.user(user).and_then(|u| u.limits.max_channels);
        let mut counts = self.user_channels.lock();
        let open = counts.get(user).copied().unwrap_or(0);
        if let Some(limit) = reached(limit, open) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened for user '{user}' has reached the maximum allowed \
                 user limit of {limit}"
            )));
        }
        *counts.entry(user.to_string()).or_default() += 1;
        Ok(())
    }

    /// A channel of `user` closed.
    pub fn close_channel(&self, user: &str) {
        let mut counts = self.user_channels.lock();
        if let Some(n) = counts.get_mut(user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(user);
            }
        }
    }

    /// Close (320 CONNECTION_FORCED, `reason`) every connection `which`
    /// picks; returns how many.
    pub fn close_connections(
        &self,
        which: impl Fn(&ClientConnection) -> bool,
        reason: &str,
    ) -> usize {
        let chosen: Vec<Arc<ClientConnection>> = self
            .connections
            .lock()
            .values()
            .filter(|c| which(c))
            .cloned()
            .collect();
        for c in &chosen {
            c.force_close(reason);
        }
        chosen.len()
    }
}
