//! Routing across exchanges: from the exchange a message was published to,
//! through exchange-to-exchange bindings and alternate exchanges, to the
//! set of queues it reaches.
//!
//! Each router answers for its own exchange only; this file follows what
//! they return. It holds no topology: the vhost passes lookups by name (for
//! alternate exchanges, which are named rather than held, and for the
//! default exchange, which routes to the queue named by the routing key).
//! This is the publish hot path: the lookups are generic closures, not
//! trait objects, so that they cost no dynamic dispatch; the exchange stacks
//! stay inline for up to four exchanges, and one scratch vector serves
//! every exchange visited. Keep it free of locks of its own and of
//! per-exchange allocations.

use std::sync::Arc;

use smallvec::SmallVec;

use super::{Destination, Exchange, RouteHeaders};
use crate::queue::Queue;

/// Resolve the queues a message published to `exchange` with
/// `routing_key` reaches, following exchange-to-exchange bindings and
/// alternate exchanges. `exchange_named` finds an exchange by name;
/// `queue_named` finds the queue the default exchange delivers to. Each
/// queue appears once in `out`; an exchange reached twice (a binding
/// cycle) is routed once.
pub fn route(
    exchange: &Arc<Exchange>,
    routing_key: &str,
    headers: &RouteHeaders<'_>,
    exchange_named: impl Fn(&str) -> Option<Arc<Exchange>>,
    queue_named: impl Fn(&str) -> Option<Arc<Queue>>,
    out: &mut Vec<Arc<Queue>>,
) {
    let mut pending: SmallVec<[Arc<Exchange>; 4]> = SmallVec::new();
    let mut visited: SmallVec<[*const Exchange; 4]> = SmallVec::new();
    let mut scratch: Vec<Destination> = Vec::new();
    pending.push(exchange.clone());
    while let Some(ex) = pending.pop() {
        let ptr = Arc::as_ptr(&ex);
        if visited.contains(&ptr) {
            continue;
        }
        visited.push(ptr);
        if ex.is_default() {
            if let Some(q) = queue_named(routing_key) {
                out.push(q);
            }
            continue;
        }
        scratch.clear();
        ex.route(routing_key, headers, &mut scratch);
        if scratch.is_empty() {
            if let Some(ae) = ex
                .alternate_exchange()
                .and_then(|n| exchange_named(n.as_str()))
            {
                pending.push(ae);
            }
            continue;
        }
        for d in scratch.drain(..) {
            match d {
                Destination::Queue(q) => out.push(q),
                Destination::Exchange(e) => pending.push(e),
            }
        }
    }
    // Routers may return a queue twice, and two paths may reach one queue;
    // a single queue needs no sorting.
    if out.len() > 1 {
        out.sort_unstable_by_key(|q| Arc::as_ptr(q) as usize);
        out.dedup_by(|a, b| Arc::ptr_eq(a, b));
    }
}
