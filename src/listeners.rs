//! Binding a listener's configured addresses: one TCP socket per address,
//! all on one port.
//!
//! As RabbitMQ's default listener, `::` is dual-stack — IPv6 and IPv4 (as
//! IPv4-mapped addresses) on one socket — where the OS allows; on a host
//! without IPv6 it falls back to `0.0.0.0`. Listed together with IPv4
//! addresses, `::` is IPv6 only, so the two do not collide on the port.
//! With port 0 the first address picks a free port and the others bind the
//! same one, so a test broker is reachable on `127.0.0.1` and `[::1]` alike.
//! This module only binds; accepting is the caller's.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;

use crate::config::socket_addr;
use crate::startup::StartupError;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 1024;

/// Bind every address in `binds` on `port`, in order. `what` names the
/// listener in errors.
pub fn bind_all(
    what: &'static str,
    binds: &[String],
    port: u16,
) -> Result<Vec<TcpListener>, StartupError> {
    let ips = binds
        .iter()
        .map(|b| socket_addr(b, 0).map(|a| a.ip()))
        .collect::<Result<Vec<IpAddr>, String>>()
        .map_err(StartupError::Config)?;
    let has_ipv4 = ips.iter().any(IpAddr::is_ipv4);
    let mut port = port;
    let mut listeners = Vec::with_capacity(ips.len());
    for ip in ips {
        let addr = SocketAddr::new(ip, port);
        let dual_stack = ip.is_ipv6() && ip.is_unspecified() && !has_ipv4;
        let listener = match listen(addr, dual_stack) {
            Err(e) if dual_stack && ipv6_unavailable(&e) => {
                let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
                tracing::warn!("IPv6 is not available ({e}); {what} listens on {v4} only");
                listen(v4, false)
            }
            other => other,
        }
        .map_err(|source| StartupError::Bind {
            what,
            addr: addr.to_string(),
            source,
        })?;
        if port == 0 {
            port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        }
        listeners.push(listener);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr, dual_stack: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        // Set either way: the system default (net.ipv6.bindv6only) varies.
        socket.set_only_v6(!dual_stack)?;
    }
    // As tokio's `TcpListener::bind`: a restarted broker can bind its port
    // while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// The errors of an IPv6 socket on a host that has no IPv6.
fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(97 | 99) // EAFNOSUPPORT, EADDRNOTAVAIL
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binds(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn port_zero_is_shared_by_every_address() {
        let ls = bind_all("test", &binds(&["127.0.0.1", "::1"]), 0).unwrap();
        let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
        assert_ne!(ports[0], 0);
        assert_eq!(ports[0], ports[1]);
    }

    #[tokio::test]
    async fn the_unspecified_ipv6_address_is_dual_stack_alone() {
        let ls = bind_all("test", &binds(&["::"]), 0).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        for host in ["127.0.0.1", "[::1]"] {
            tokio::net::TcpStream::connect(format!("{host}:{port}"))
                .await
                .unwrap_or_else(|e| panic!("{host}: {e}"));
        }
    }

    #[tokio::test]
    async fn ipv6_and_ipv4_wildcards_together_do_not_collide() {
        let ls = bind_all("test", &binds(&["::", "0.0.0.0"]), 0).unwrap();
        assert_eq!(ls.len(), 2);
    }

    #[test]
    fn a_bad_address_is_a_config_error() {
        let e = bind_all("test", &binds(&["nowhere"]), 0).unwrap_err();
        assert!(e.to_string().contains("nowhere"), "{e}");
    }
}
