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
use crate::broker::audit::AuditLog;
use crate::config::Config;
use crate::listeners::bind_all;
use crate::startup::StartupError;
use crate::store::Store;
use crate::tls::TlsSettings;
use crate::tls::http::TlsListener;

/// How long shutdown waits for connections to close before giving up.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// A running broker.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    amqp_addrs: Vec<SocketAddr>,
    amqps_addrs: Vec<SocketAddr>,
    tls: Option<Arc<TlsSettings>>,
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
            let keys = config.storage.keyring().map_err(StartupError::Config)?;
            Store::open_sealed(dir, &config.storage.store_options(), keys).map_err(|source| {
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
        // Certificates first: a bad file must stop start-up before any
        // port is taken.
        let wants_tls = config.amqps.enabled || config.admin.tls || config.metrics.tls;
        let tls = match wants_tls {
            true => Some(Arc::new(
                TlsSettings::load(&config.tls).map_err(|e| StartupError::Tls(e.to_string()))?,
            )),
            false => None,
        };
        let amqp = match config.amqp.enabled {
            true => bind_all("AMQP", &config.amqp.bind, config.amqp.port)?,
            false => Vec::new(),
        };
        let amqps = match config.amqps.enabled {
            true => bind_all("AMQPS", &config.amqps.bind, config.amqps.port)?,
            false => Vec::new(),
        };
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
        let audit = match config.audit.enabled {
            true => AuditLog::open(&config.audit.path).map_err(|source| StartupError::Audit {
                path: config.audit.path.clone(),
                source,
            })?,
            false => AuditLog::disabled(),
        };
        // Recovery reads the store, and boot-time definitions are read and
        // written: blocking work. Definitions are in place before any
        // listener accepts, so no client sees the broker without them.
        let broker = tokio::task::spawn_blocking(move || {
            // Recovery reads what the store holds: a damaged record is the
            // data directory's problem, so its error names the directory.
            let path = match config.storage.ephemeral {
                true => PathBuf::from("<memory>"),
                false => config.storage.data_dir.clone(),
            };
            let broker = Broker::open_with_audit(config, store, audit)
                .map_err(|source| StartupError::Store { path, source })?;
            if let Err(e) = broker.import_boot_definitions() {
                broker.close();
                return Err(e);
            }
            Ok(broker)
        })
        .await
        .map_err(|e| StartupError::Config(format!("recovery failed: {e}")))??;
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
        tasks.spawn(crate::broker::stats::sample_stats(
            broker.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::broker::delayed::route_delayed(
            broker.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(crate::links::supervise(broker.clone(), shutdown.clone()));
        let mut amqp_addrs = Vec::new();
        for listener in amqp {
            let addr = local_addr(&listener);
            tracing::info!("started TCP listener on {addr}");
            broker.add_listener("amqp", addr);
            amqp_addrs.push(addr);
            tasks.spawn(accept_loop(
                listener,
                None,
                broker.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }
        let mut amqps_addrs = Vec::new();
        for listener in amqps {
            let addr = local_addr(&listener);
            tracing::info!("started TLS (SSL) listener on {addr}");
            broker.add_listener("amqp/ssl", addr);
            amqps_addrs.push(addr);
            tasks.spawn(accept_loop(
                listener,
                tls.clone(),
                broker.clone(),
                shutdown.clone(),
                tasks.clone(),
            ));
        }

        // Every address of a listener has the same port.
        let https = |on: bool| if on { tls.clone() } else { None };
        let admin_addr = admin.map(|listeners| {
            let router = admin::router(broker.clone());
            serve_http(
                "Management plugin",
                listeners,
                router,
                https(broker.config.admin.tls),
                &tasks,
                &shutdown,
            )
        });
        let metrics_addr = metrics.map(|listeners| {
            let router = admin::metrics_router(broker.clone());
            serve_http(
                "Prometheus metrics",
                listeners,
                router,
                https(broker.config.metrics.tls),
                &tasks,
                &shutdown,
            )
        });
        if let Some(addr) = admin_addr {
            let https = broker.config.admin.tls && tls.is_some();
            broker.add_listener(if https { "https" } else { "http" }, addr);
        }
        if let Some(addr) = metrics_addr {
            let https = broker.config.metrics.tls && tls.is_some();
            let protocol = if https {
                "https/prometheus"
            } else {
                "http/prometheus"
            };
            broker.add_listener(protocol, addr);
        }
        tracing::info!("Server startup complete; 0 plugins started.");
        if amqp_addrs.is_empty() && amqps_addrs.is_empty() {
            return Err(StartupError::Config("no AMQP listener is enabled".into()));
        }
        Ok(Server {
            broker,
            amqp_addrs,
            amqps_addrs,
            tls,
            admin_addr,
            metrics_addr,
            shutdown,
            tasks,
        })
    }

    /// Read the certificate files again (SIGHUP): new TLS handshakes use
    /// them, connections already open carry on. On error the old
    /// certificates stay in use.
    pub fn reload_tls(&self) -> Result<(), StartupError> {
        match &self.tls {
            Some(tls) => tls.reload().map_err(|e| StartupError::Tls(e.to_string())),
            None => Ok(()),
        }
    }

    /// Start a new audit file at the configured path (after rotation).
    pub fn reopen_audit_log(&self) {
        self.broker.audit.reopen();
    }

    /// The first AMQPS listener's address, if it runs.
    pub fn amqps_addr(&self) -> Option<SocketAddr> {
        self.amqps_addrs.first().copied()
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The first plain AMQP listener's address, or the first AMQPS one
    /// when there is no plain listener.
    pub fn amqp_addr(&self) -> SocketAddr {
        self.amqp_addrs
            .first()
            .or(self.amqps_addrs.first())
            .copied()
            .unwrap_or(unbound())
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

/// Serve `router` on every address of an HTTP listener, over TLS if
/// `tls`; the address (they share the port) for operators.
fn serve_http(
    what: &str,
    listeners: Vec<TcpListener>,
    router: axum::Router,
    tls: Option<Arc<TlsSettings>>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> SocketAddr {
    let addr = listeners.first().map(local_addr).unwrap_or(unbound());
    let kind = if tls.is_some() {
        "HTTPS"
    } else {
        "HTTP (non-TLS)"
    };
    tracing::info!("{what}: {kind} listener started on port {}", addr.port());
    for listener in listeners {
        match &tls {
            Some(tls) => {
                let l = TlsListener::new(listener, tls.clone(), shutdown.clone());
                tasks.spawn(admin::serve(l, router.clone(), shutdown.clone()));
            }
            None => {
                tasks.spawn(admin::serve(listener, router.clone(), shutdown.clone()));
            }
        }
    }
    addr
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    listener.local_addr().unwrap_or_else(|_| unbound())
}

fn unbound() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsSettings>>,
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
                // `connection.open` refuses connections past the limit with
                // RabbitMQ's 530; sockets far past it (a flood of handshakes)
                // are dropped here before they cost anything.
                if max != 0 && tasks.len() >= 2 * max + 16 {
                    tracing::warn!(%peer, "connection dropped: {max} connections and as many handshakes in progress");
                    drop(stream);
                    continue;
                }
                match &tls {
                    None => tasks.spawn(crate::amqp::serve::serve_tcp(
                        stream,
                        peer,
                        broker.clone(),
                        shutdown.clone(),
                    )),
                    Some(tls) => tasks.spawn(crate::amqp::serve::serve_tls(
                        stream,
                        peer,
                        tls.amqp_acceptor(),
                        broker.clone(),
                        shutdown.clone(),
                    )),
                };
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

/// RFC 3986 unreserved characters stay as they are; everything else is
/// escaped (a vhost named `/` is `%2F`).
const URI_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URI_COMPONENT).to_string()
}

/// Raise the soft open-files limit to the hard limit, so connection counts
/// are bounded by the system, not by a conservative default of 1,024.
pub fn raise_fd_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open files limit is {n}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
}
