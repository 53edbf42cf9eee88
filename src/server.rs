//! Starting and stopping a broker: bind the listeners, accept connections,
//! and shut down gracefully.
//!
//! [`Server::start`] is the whole broker; `main.rs` and the test suite both
//! use it, so tests run the real thing in-process on port 0:
//!
//! ```no_run
//! # async fn demo() -> Result<(), warren::StartupError> {
//! let server = warren::Server::start(warren::Config::ephemeral()).await?;
//! let url = server.amqp_url(); // amqp://guest:guest@127.0.0.1:<port>/%2f
//! # server.shutdown().await; Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::broker::Broker;
use crate::config::Config;
use crate::listeners::bind_all;
use crate::startup::StartupError;
use crate::store::Store;

/// How long shutdown waits for connections to close before giving up.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A running broker.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    amqp_addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Server {
    /// Bind every listener and start serving. Returns once the broker
    /// accepts connections.
    pub async fn start(config: Config) -> Result<Server, StartupError> {
        // Opening sled (and waiting out a lock a just-stopped broker still
        // holds) blocks: not on the runtime's workers.
        let (config, store) = tokio::task::spawn_blocking(move || {
            let store = Server::open_store(&config);
            (config, store)
        })
        .await
        .map_err(|e| StartupError::Config(format!("the store opener failed: {e}")))?;
        Server::start_with_store(config, store?).await
    }

    fn open_store(config: &Config) -> Result<Store, StartupError> {
        Ok(if config.storage.ephemeral {
            Store::ephemeral()
        } else {
            let dir = &config.storage.data_dir;
            std::fs::create_dir_all(dir).map_err(|source| StartupError::DataDir {
                path: dir.clone(),
                source,
            })?;
            Store::open(dir, &config.storage.store_options()).map_err(|source| {
                StartupError::Store {
                    path: dir.clone(),
                    source,
                }
            })?
        })
    }

    /// Start over a store opened by the caller (embedding, or tests that
    /// inject storage failures).
    pub async fn start_with_store(config: Config, store: Store) -> Result<Server, StartupError> {
        let amqp = bind_all("AMQP", &config.amqp.bind, config.amqp.port)?;
        let admin = match config.admin.enabled {
            true => Some(bind_all(
                "the admin API",
                &config.admin.bind,
                config.admin.port,
            )?),
            false => None,
        };
        let metrics = match config.metrics.enabled {
            true => Some(bind_all(
                "metrics",
                &config.metrics.bind,
                config.metrics.port,
            )?),
            false => None,
        };
        // Recovery reads the store: blocking work.
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, store))
            .await
            .map_err(|e| StartupError::Config(format!("recovery failed: {e}")))?
            .map_err(|source| StartupError::Store {
                path: PathBuf::from("<recovery>"),
                source,
            })?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();

        let data_dir =
            (!broker.config.storage.ephemeral).then(|| broker.config.storage.data_dir.clone());
        tasks.spawn(crate::broker::alarms::watch_resources(
            broker.clone(),
            data_dir,
            shutdown.clone(),
        ));
        tasks.spawn(crate::broker::connections::watch_ack_deadlines(
            broker.clone(),
            shutdown.clone(),
        ));
        let mut amqp_addrs = Vec::new();
        for listener in amqp {
            let addr = local_addr(&listener);
            tracing::info!("started TCP listener on {addr}");
            amqp_addrs.push(addr);
            tasks.spawn(accept_loop(
                listener,
                broker.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }

        // Every address of a listener has the same port.
        let admin_addr = admin.map(|listeners| {
            let addr = listeners.first().map(local_addr).unwrap_or(unbound());
            tracing::info!(
                "Management plugin: HTTP (non-TLS) listener started on port {}",
                addr.port()
            );
            for listener in listeners {
                tasks.spawn(admin::serve(
                    listener,
                    admin::router(broker.clone()),
                    shutdown.clone(),
                ));
            }
            addr
        });
        let metrics_addr = metrics.map(|listeners| {
            let addr = listeners.first().map(local_addr).unwrap_or(unbound());
            tracing::info!(
                "Prometheus metrics: HTTP (non-TLS) listener started on port {}",
                addr.port()
            );
            for listener in listeners {
                tasks.spawn(admin::serve(
                    listener,
                    admin::metrics_router(broker.clone()),
                    shutdown.clone(),
                ));
            }
            addr
        });
        tracing::info!("Server startup complete; 0 plugins started.");
        Ok(Server {
            broker,
            amqp_addrs,
            admin_addr,
            metrics_addr,
            shutdown,
            tasks,
        })
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The first AMQP listener's address.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addrs.first().copied().unwrap_or(unbound())
    }

    /// Every AMQP listener's address, in the order configured.
    pub fn amqp_addrs(&self) -> &[SocketAddr] {
        &self.amqp_addrs
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// An AMQP URL for the default user and vhost.
    pub fn amqp_url(&self) -> String {
        let auth = &self.broker.config.auth;
        let addr = self.amqp_addr();
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!(
            "amqp://{}:{}@{host}:{}/{}",
            auth.default_user,
            auth.default_pass,
            addr.port(),
            percent_encode(&auth.default_vhost)
        )
    }

    /// Stop accepting, close every connection with 320 CONNECTION_FORCED,
    /// and wait (up to a deadline) for them to finish.
    pub async fn shutdown(self) {
        tracing::info!("shutting down");
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within {SHUTDOWN_DEADLINE:?}");
        }
        let broker = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || broker.close()).await;
    }
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap_or_else(|_| unbound())
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let max = broker.config.limits.max_connections as usize;
    // A descriptor kept in reserve: when the process runs out, it is
    // released to accept the waiting connection and close it at once, so
    // the client is refused cleanly instead of hanging in the backlog.
    let mut reserve = std::fs::File::open("/dev/null").ok();
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                // IPv4 clients of a dual-stack socket arrive as
                // ::ffff:a.b.c.d; name them as IPv4 (loopback checks, logs).
                let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                if max != 0 && broker.connections().len() >= max {
                    tracing::warn!(%peer, "connection refused: limit of {max} connections reached");
                    drop(stream);
                    continue;
                }
                tasks.spawn(crate::amqp::connection::serve_tcp(
                    stream,
                    peer,
                    broker.clone(),
                    shutdown.clone(),
                ));
            }
            Err(e) => {
                let out_of_descriptors = matches!(e.raw_os_error(), Some(23 | 24)); // ENFILE, EMFILE
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                    tracing::warn!(
                        "accept failed: {e}{}",
                        if out_of_descriptors {
                            "; refusing new connections until descriptors are free \
                             (raise the open files limit)"
                        } else {
                            ""
                        }
                    );
                    last_warning = Some(std::time::Instant::now());
                }
                if out_of_descriptors && reserve.take().is_some() {
                    if let Ok(Ok((stream, _))) =
                        tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
                    {
                        drop(stream);
                    }
                    reserve = std::fs::File::open("/dev/null").ok();
                } else {
                    // A transient error, or no reserve to spend: existing
                    // connections carry on; new ones wait a moment.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Raise the soft open-files limit to the hard limit, so connection counts
/// are bounded by the system, not by a conservative default of 1,024.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open files limit is {n}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}
