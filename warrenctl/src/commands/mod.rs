//! One function per command, grouped by resource; `run` dispatches.
//! Commands print rabbitmqctl's banner first (so a failure follows the
//! banner, as there), then call the API, then print the result.

mod definitions;
pub mod list;
mod node;
mod objects;
mod users;

use std::time::Duration;

use serde_json::json;

use crate::api::{Api, Target, seg};
use crate::cli::Command;
use crate::error::Failure;
use crate::output::Out;
use list::Missing;

/// What every command works with.
pub struct Ctx {
    pub api: Api,
    pub target: Target,
    pub out: Out,
    pub vhost: String,
    /// -t in seconds, when given.
    pub timeout: Option<u64>,
    /// -n, when given; otherwise the node the API reports.
    node: Option<String>,
}

/// rabbitmqctl's default operation timeout.
pub const DEFAULT_TIMEOUT: u64 = 60;

impl Ctx {
    pub fn new(
        target: Target,
        out: Out,
        vhost: String,
        timeout: Option<u64>,
        node: Option<String>,
    ) -> Result<Ctx, Failure> {
        let api = Api::new(
            &target,
            Duration::from_secs(timeout.unwrap_or(DEFAULT_TIMEOUT).max(1)),
        )?;
        Ok(Ctx {
            api,
            target,
            out,
            vhost,
            timeout,
            node,
        })
    }

    /// The node's name (`rabbit@host`), for messages.
    pub fn node_name(&mut self) -> Result<String, Failure> {
        if let Some(n) = &self.node {
            return Ok(n.clone());
        }
        let overview = self.api.get_json("/api/overview")?;
        let name = overview
            .get("node")
            .and_then(|v| v.as_str())
            .unwrap_or("unknown")
            .to_string();
        self.node = Some(name.clone());
        Ok(name)
    }

    /// The end of a command that changes something: nothing more in table
    /// mode, rabbitmqctl's `{"node":...,"result":"ok"}` in JSON mode.
    pub fn done(&mut self) -> Result<(), Failure> {
        if self.out.json() {
            let node = self.node_name()?;
            self.out
                .json_value(&json!({"node": node, "result": "ok"}))?;
        }
        Ok(())
    }
}

pub fn run(command: Command, ctx: &mut Ctx) -> Result<(), Failure> {
    let vh = ctx.vhost.clone();
    match command {
        Command::Ping => node::ping(ctx),
        Command::Status => node::status(ctx),
        Command::AwaitStartup | Command::Wait { .. } => node::await_startup(ctx),
        Command::CheckRunning => node::check_running(ctx, false),
        Command::IsRunning => node::check_running(ctx, true),
        Command::CheckLocalAlarms => node::check_alarms(ctx, true),
        Command::CheckAlarms => node::check_alarms(ctx, false),
        Command::Alarms => node::alarms(ctx),
        Command::CheckPortConnectivity => node::check_port_connectivity(ctx),
        Command::CheckVirtualHosts => node::check_virtual_hosts(ctx),
        Command::CheckPortListener { port } => node::check_port_listener(ctx, port),
        Command::CheckProtocolListener { protocol } => {
            node::check_protocol_listener(ctx, &protocol)
        }
        Command::ServerVersion => node::server_version(ctx),
        Command::Listeners => node::listeners(ctx),

        Command::ListQueues { columns, .. } => {
            let t = ctx.timeout.unwrap_or(DEFAULT_TIMEOUT);
            list::run(
                ctx,
                &list::QUEUES,
                &columns.columns,
                &list::in_vhost("queues", &vh),
                &[
                    format!("Timeout: {t}.0 seconds ..."),
                    format!("Listing queues for vhost {vh} ..."),
                ],
                Missing::Empty,
            )
        }
        Command::ListExchanges(c) => list::run(
            ctx,
            &list::EXCHANGES,
            &c.columns,
            &list::in_vhost("exchanges", &vh),
            &[format!("Listing exchanges for vhost {vh} ...")],
            Missing::Empty,
        ),
        Command::ShovelStatus(c) => list::run(
            ctx,
            &list::SHOVELS,
            &c.columns,
            "/api/shovels",
            &["Shovel status on node ...".to_string()],
            Missing::Empty,
        ),
        Command::FederationStatus(c) => list::run(
            ctx,
            &list::FEDERATION_LINKS,
            &c.columns,
            "/api/federation-links",
            &["Listing federation links on node ...".to_string()],
            Missing::Empty,
        ),
        Command::ListBindings(c) => list::run(
            ctx,
            &list::BINDINGS,
            &c.columns,
            &list::in_vhost("bindings", &vh),
            &[format!("Listing bindings for vhost {vh}...")],
            Missing::Empty,
        ),
        Command::ListConnections(c) => list::run(
            ctx,
            &list::CONNECTIONS,
            &c.columns,
            "/api/connections",
            &["Listing connections ...".to_string()],
            Missing::Empty,
        ),
        Command::ListConsumers(c) => list::run(
            ctx,
            &list::CONSUMERS,
            &c.columns,
            &list::in_vhost("consumers", &vh),
            &[format!("Listing consumers in vhost {vh} ...")],
            Missing::Empty,
        ),
        Command::ListUsers => list::run(
            ctx,
            &list::USERS,
            &[],
            "/api/users",
            &["Listing users ...".to_string()],
            Missing::Empty,
        ),
        Command::ListVhosts(c) => list::run(
            ctx,
            &list::VHOSTS,
            &c.columns,
            "/api/vhosts",
            &["Listing vhosts ...".to_string()],
            Missing::Empty,
        ),
        Command::ListPermissions => list::run(
            ctx,
            &list::PERMISSIONS,
            &[],
            &format!("/api/vhosts/{}/permissions", seg(&vh)),
            &[format!("Listing permissions for vhost \"{vh}\" ...")],
            Missing::VhostError,
        ),
        Command::ListPolicies => list::run(
            ctx,
            &list::POLICIES,
            &[],
            &list::in_vhost("policies", &vh),
            &[format!("Listing policies for vhost \"{vh}\" ...")],
            Missing::VhostError,
        ),

        Command::AddUser { user, pass } => users::add_user(ctx, &user, pass),
        Command::DeleteUser { user } => users::delete_user(ctx, &user),
        Command::ChangePassword { user, pass } => users::change_password(ctx, &user, pass),
        Command::SetUserTags { user, tags } => users::set_user_tags(ctx, &user, &tags),
        Command::AuthenticateUser { user, pass } => users::authenticate_user(ctx, &user, pass),
        Command::SetPermissions {
            user,
            conf,
            write,
            read,
        } => users::set_permissions(ctx, &user, [&conf, &write, &read]),
        Command::ClearPermissions { user } => users::clear_permissions(ctx, &user),

        Command::AddVhost {
            name,
            description,
            tags,
            default_queue_type,
        } => objects::add_vhost(ctx, &name, description, tags, default_queue_type),
        Command::DeleteVhost { name } => objects::delete_vhost(ctx, &name),
        Command::TraceOn => objects::trace(ctx, true),
        Command::TraceOff => objects::trace(ctx, false),
        Command::SetPolicy {
            name,
            pattern,
            definition,
            priority,
            apply_to,
        } => objects::set_policy(ctx, &name, &pattern, &definition, priority, &apply_to),
        Command::ClearPolicy { name } => objects::clear_policy(ctx, &name),
        Command::PurgeQueue { queue } => objects::purge_queue(ctx, &queue),
        Command::PauseQueue { queue } => objects::pause_queue(ctx, &queue, true),
        Command::ResumeQueue { queue } => objects::pause_queue(ctx, &queue, false),
        Command::BrowseQueue { queue, count } => objects::browse_queue(ctx, &queue, count),
        Command::MoveMessages {
            queue,
            destination,
            count,
        } => objects::move_messages(ctx, &queue, &destination, count),
        Command::EraseMessages { header, value } => objects::erase_messages(ctx, &header, &value),
        Command::DeleteQueue {
            queue,
            if_empty,
            if_unused,
        } => objects::delete_queue(ctx, &queue, if_empty, if_unused),
        Command::CloseConnection { connection, reason } => {
            objects::close_connection(ctx, &connection, &reason)
        }

        Command::ImportDefinitions { file } => definitions::import(ctx, file.as_deref()),
        Command::ExportDefinitions { file } => definitions::export(ctx, &file),
    }
}
