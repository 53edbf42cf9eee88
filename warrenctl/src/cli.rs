//! The command line: rabbitmqctl's command names (snake_case), argument
//! orders and global options, plus where to find the management API.
//! Global options may come before or after the command, as rabbitmqctl
//! allows (`rabbitmqctl list_queues name --formatter json`).

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

use crate::output::Formatter;

#[derive(Parser, Debug)]
#[command(
    name = "warrenctl",
    version,
    about = "A rabbitmqctl-compatible command line for Warren, over the management HTTP API",
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Virtual host of vhost-scoped commands.
    #[arg(short = 'p', long = "vhost", global = true, default_value = "/")]
    pub vhost: String,
    /// No informational banners (the table header stays).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No banners and no table header.
    #[arg(short, long, global = true)]
    pub silent: bool,
    /// No table header.
    #[arg(long, global = true)]
    pub no_table_headers: bool,
    /// Output format: tab-separated table (default) or JSON.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub formatter: Formatter,
    /// Operation timeout in seconds (default 60; await_startup: 300).
    #[arg(short = 't', long, global = true, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Base URL of the management API.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_URL",
        default_value = "http://127.0.0.1:15672"
    )]
    pub url: String,
    /// Management API user. (After `delete_queue`, -u means --if-unused, as
    /// in rabbitmqctl; use --username there.)
    #[arg(
        short = 'u',
        long,
        global = true,
        env = "WARRENCTL_USERNAME",
        default_value = "guest"
    )]
    pub username: String,
    /// Management API password.
    #[arg(
        long,
        global = true,
        env = "WARRENCTL_PASSWORD",
        default_value = "guest",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub password: String,
    /// Accepted for rabbitmqctl compatibility; the node is the one --url
    /// points at.
    #[arg(short = 'n', long, global = true)]
    pub node: Option<String>,
    /// Accepted for rabbitmqctl compatibility; ignored.
    #[arg(short = 'l', long, global = true, hide = true)]
    pub longnames: bool,
}

/// A list command's columns: `name messages` or `name,messages`.
#[derive(Args, Debug)]
pub struct Columns {
    /// Columns to show (see each command's help for the names).
    #[arg(value_name = "COLUMN")]
    pub columns: Vec<String>,
}

#[derive(Subcommand, Debug)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// Check that the broker's management API answers.
    Ping,
    /// Show the node's status (runtime, plugins, alarms, memory, listeners).
    Status,
    /// Wait until the management API answers (up to --timeout, 300 s).
    AwaitStartup,
    /// Wait until the management API answers; the pid file is ignored.
    Wait {
        #[arg(value_name = "PIDFILE")]
        pidfile: Option<String>,
        #[arg(long)]
        pid: Option<u32>,
    },

    /// List queues: arguments, auto_delete, consumer_capacity,
    /// consumer_utilisation, consumers, disk_reads, disk_writes, durable,
    /// exclusive, exclusive_consumer_pid, exclusive_consumer_tag,
    /// head_message_timestamp, leader, members, memory, message_bytes*,
    /// messages*, name, online, owner_pid, pid, policy, slave_pids, state,
    /// synchronised_slave_pids, type (default: name messages).
    ListQueues {
        #[command(flatten)]
        columns: Columns,
        /// Accepted for compatibility (single node).
        #[arg(long, hide = true)]
        online: bool,
        #[arg(long, hide = true)]
        offline: bool,
        #[arg(long, hide = true)]
        local: bool,
    },
    /// List exchanges: arguments, auto_delete, durable, internal, name,
    /// policy, type (default: name type).
    ListExchanges(Columns),
    /// Dynamic shovels, every vhost: destination, destination_protocol,
    /// destination_exchange, destination_exchange_key, destination_queue,
    /// last_changed, name, source, source_exchange, source_exchange_key,
    /// source_protocol, source_queue, state, termination_reason, type,
    /// vhost, forwarded (default: rabbitmqctl's columns).
    ShovelStatus(Columns),
    /// Federation links, every vhost: error, exchange, id, last_changed,
    /// queue, status, type, upstream, upstream_exchange, upstream_queue,
    /// uri, vhost, forwarded (default: rabbitmqctl's columns).
    FederationStatus(Columns),
    /// List bindings: arguments, destination_kind, destination_name,
    /// routing_key, source_kind, source_name (default: all).
    ListBindings(Columns),
    /// List connections: auth_mechanism, channel_max, channels,
    /// client_properties, connected_at, frame_max, host, name, peer_*,
    /// pid, port, protocol, recv_*, send_*, ssl*, state, timeout, user,
    /// vhost (default: user peer_host peer_port state).
    ListConnections(Columns),
    /// List consumers: ack_required, active, activity_status, arguments,
    /// channel_pid, consumer_tag, prefetch_count, queue_name.
    ListConsumers(Columns),
    /// List users and their tags.
    ListUsers,
    /// List virtual hosts: cluster_state, default_queue_type, description,
    /// name, tags, tracing (default: name).
    ListVhosts(Columns),
    /// List user permissions in a virtual host.
    ListPermissions,
    /// List policies in a virtual host.
    ListPolicies,

    /// Create a user (the password is read from stdin when omitted; an
    /// empty password disables password login).
    AddUser {
        #[arg(value_name = "USERNAME")]
        user: String,
        #[arg(value_name = "PASSWORD", allow_hyphen_values = true)]
        pass: Option<String>,
    },
    /// Delete a user.
    DeleteUser {
        #[arg(value_name = "USERNAME")]
        user: String,
    },
    /// Change a user's password (read from stdin when omitted).
    ChangePassword {
        #[arg(value_name = "USERNAME")]
        user: String,
        #[arg(value_name = "NEW_PASSWORD", allow_hyphen_values = true)]
        pass: Option<String>,
    },
    /// Set a user's tags (none: clear them).
    SetUserTags {
        #[arg(value_name = "USERNAME")]
        user: String,
        #[arg(value_name = "TAG")]
        tags: Vec<String>,
    },
    /// Check a user's password against the broker.
    AuthenticateUser {
        #[arg(value_name = "USERNAME")]
        user: String,
        #[arg(value_name = "PASSWORD", allow_hyphen_values = true)]
        pass: Option<String>,
    },
    /// Create a virtual host.
    AddVhost {
        #[arg(value_name = "VHOST")]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// Comma-separated tags.
        #[arg(long)]
        tags: Option<String>,
        #[arg(long = "default-queue-type")]
        default_queue_type: Option<String>,
    },
    /// Start firehose tracing in the virtual host (-p): messages published
    /// and delivered there are copied to amq.rabbitmq.trace.
    TraceOn,
    /// Stop firehose tracing in the virtual host (-p).
    TraceOff,
    /// Delete a virtual host and everything in it.
    DeleteVhost {
        #[arg(value_name = "VHOST")]
        name: String,
    },
    /// Set a user's permissions in a virtual host (-p): configure, write, read.
    SetPermissions {
        #[arg(value_name = "USERNAME")]
        user: String,
        #[arg(value_name = "CONF", allow_hyphen_values = true)]
        conf: String,
        #[arg(value_name = "WRITE", allow_hyphen_values = true)]
        write: String,
        #[arg(value_name = "READ", allow_hyphen_values = true)]
        read: String,
    },
    /// Revoke a user's permissions in a virtual host (-p).
    ClearPermissions {
        #[arg(value_name = "USERNAME")]
        user: String,
    },
    /// Set or update a policy in a virtual host (-p).
    SetPolicy {
        name: String,
        #[arg(allow_hyphen_values = true)]
        pattern: String,
        /// The policy definition, a JSON object.
        definition: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// queues, exchanges or all.
        #[arg(long = "apply-to", default_value = "all")]
        apply_to: String,
    },
    /// Remove a policy from a virtual host (-p).
    ClearPolicy { name: String },
    /// Remove all messages from a queue.
    PurgeQueue {
        #[arg(value_name = "QUEUE")]
        queue: String,
    },
    /// Pause deliveries from a queue (kept across restarts; Warren's).
    PauseQueue {
        #[arg(value_name = "QUEUE")]
        queue: String,
    },
    /// Resume deliveries from a paused queue.
    ResumeQueue {
        #[arg(value_name = "QUEUE")]
        queue: String,
    },
    /// Show the first messages of a queue without taking them (nothing is
    /// marked redelivered, the order stays; Warren's).
    BrowseQueue {
        #[arg(value_name = "QUEUE")]
        queue: String,
        /// How many (default 10).
        #[arg(long, default_value_t = 10)]
        count: u64,
    },
    /// Move messages from one queue to another of the vhost, keeping their
    /// properties and x-death (a dead-letter queue redrive; Warren's).
    MoveMessages {
        #[arg(value_name = "QUEUE")]
        queue: String,
        #[arg(value_name = "DESTINATION")]
        destination: String,
        /// How many (default: all).
        #[arg(long)]
        count: Option<u64>,
    },
    /// Erase every message of the vhost (-p) whose header equals a value,
    /// from every queue and stream, durably (the right to erasure;
    /// Warren's). Prints how many went from where.
    EraseMessages {
        /// The header to match, e.g. x-subject-id.
        #[arg(value_name = "HEADER")]
        header: String,
        /// The value it must equal (compared as text).
        #[arg(value_name = "VALUE")]
        value: String,
    },
    /// Delete a queue.
    DeleteQueue {
        #[arg(value_name = "QUEUE")]
        queue: String,
        /// Only if it has no messages ready.
        #[arg(short = 'e', long = "if-empty")]
        if_empty: bool,
        /// Only if it has no consumers.
        #[arg(long = "if-unused")]
        if_unused: bool,
    },
    /// Import definitions from a JSON file ("-" or none: stdin).
    ImportDefinitions {
        #[arg(value_name = "FILE")]
        file: Option<String>,
    },
    /// Export definitions as JSON to a file ("-": stdout).
    ExportDefinitions {
        #[arg(value_name = "FILE")]
        file: String,
    },
    /// Force-close a connection, by the name list_connections shows.
    CloseConnection {
        #[arg(value_name = "CONNECTION_NAME")]
        connection: String,
        #[arg(value_name = "REASON", allow_hyphen_values = true)]
        reason: String,
    },

    /// Health check: the node is booted and running.
    CheckRunning,
    /// Whether the node is running.
    IsRunning,
    /// Health check: no resource alarm on this node.
    CheckLocalAlarms,
    /// Health check: no resource alarm in the cluster.
    CheckAlarms,
    /// List resource alarms in effect.
    Alarms,
    /// Health check: every listener accepts TCP connections.
    CheckPortConnectivity,
    /// Health check: every virtual host is running.
    CheckVirtualHosts,
    /// Health check: a listener is up on this port.
    CheckPortListener { port: u16 },
    /// Health check: a listener is up for this protocol (amqp, amqp/ssl, http, ...).
    CheckProtocolListener { protocol: String },
    /// The broker's RabbitMQ-compatible version.
    ServerVersion,
    /// The node's listeners.
    Listeners,
}

/// The program's name as invoked (`rabbitmqctl` through a symlink, say).
pub fn program_name(argv0: Option<&OsString>) -> &'static str {
    let name = argv0
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".exe").unwrap_or(&name);
    match name {
        "rabbitmqctl" => "rabbitmqctl",
        "rabbitmq-diagnostics" => "rabbitmq-diagnostics",
        _ => "warrenctl",
    }
}

/// rabbitmqctl's `delete_queue Q -u` means `--if-unused`; our global `-u`
/// is the API user. After `delete_queue`, `-u` is taken as rabbitmqctl
/// means it.
pub fn rewrite_args(args: Vec<OsString>) -> Vec<OsString> {
    let mut seen_delete_queue = false;
    args.into_iter()
        .map(|a| {
            if a == "delete_queue" {
                seen_delete_queue = true;
            } else if seen_delete_queue && a == "-u" {
                return OsString::from("--if-unused");
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        Cli::try_parse_from(rewrite_args(args))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_go_anywhere() {
        let cli = parse(&[
            "warrenctl",
            "list_queues",
            "name",
            "messages",
            "--formatter",
            "json",
            "-p",
            "v",
        ])
        .unwrap();
        assert_eq!(cli.global.formatter, Formatter::Json);
        assert_eq!(cli.global.vhost, "v");
        match cli.command {
            Command::ListQueues { columns, .. } => {
                assert_eq!(columns.columns, ["name", "messages"])
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&["warrenctl", "-q", "-t", "5", "list_users"]).unwrap();
        assert!(cli.global.quiet);
        assert_eq!(cli.global.timeout, Some(5));
    }

    #[test]
    fn rabbitmqctl_argument_orders() {
        let cli = parse(&["x", "set_permissions", "-p", "vh", "bob", "^a", "^b", ".*"]).unwrap();
        assert_eq!(cli.global.vhost, "vh");
        match cli.command {
            Command::SetPermissions {
                user,
                conf,
                write,
                read,
            } => {
                assert_eq!(
                    (user.as_str(), conf.as_str(), write.as_str(), read.as_str()),
                    ("bob", "^a", "^b", ".*")
                );
            }
            other => panic!("{other:?}"),
        }
        let cli = parse(&[
            "x",
            "set_policy",
            "--priority",
            "3",
            "--apply-to",
            "queues",
            "p",
            "^q",
            "{\"max-length\":1}",
        ])
        .unwrap();
        match cli.command {
            Command::SetPolicy {
                name,
                priority,
                apply_to,
                ..
            } => {
                assert_eq!(
                    (name.as_str(), priority, apply_to.as_str()),
                    ("p", 3, "queues")
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delete_queue_short_flags_mean_what_rabbitmqctl_means() {
        let cli = parse(&["x", "-u", "admin", "delete_queue", "q", "-u", "-e"]).unwrap();
        assert_eq!(cli.global.username, "admin");
        match cli.command {
            Command::DeleteQueue {
                queue,
                if_empty,
                if_unused,
            } => {
                assert_eq!(queue, "q");
                assert!(if_empty && if_unused);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["x", "nosuchcommand"]).is_err());
        assert!(parse(&["x", "add_vhost"]).is_err());
        assert!(parse(&["x", "list_users", "--formatter", "xml"]).is_err());
    }

    #[test]
    fn names_under_which_we_answer() {
        assert_eq!(
            program_name(Some(&OsString::from("/usr/sbin/rabbitmqctl"))),
            "rabbitmqctl"
        );
        assert_eq!(
            program_name(Some(&OsString::from("rabbitmq-diagnostics"))),
            "rabbitmq-diagnostics"
        );
        assert_eq!(
            program_name(Some(&OsString::from("./target/debug/warrenctl"))),
            "warrenctl"
        );
        assert_eq!(program_name(None), "warrenctl");
    }
}
