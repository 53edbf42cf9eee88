//! warrenctl: rabbitmqctl's commands, output and exit codes, spoken to a
//! broker's management HTTP API (Warren's, or RabbitMQ's: the paths and
//! JSON are the same). Installed or linked as `rabbitmqctl` or
//! `rabbitmq-diagnostics`, it answers to those names.
//!
//! # Layout
//! - `cli`: the command line (clap), and argv fix-ups for rabbitmqctl's
//!   own short flags.
//! - `api`: blocking HTTP client; transport failures and statuses become
//!   exit codes.
//! - `commands`: one function per command; `commands::list` holds every
//!   list command's columns.
//! - `render`: rabbitmqctl's ways of writing values (pure, unit-tested).
//! - `output`: banners, headers, -q/-s, `--formatter json`.
//! - `error`: `Failure` and the sysexits codes (0, 64, 65, 69, 74, 77).

mod api;
mod cli;
mod commands;
mod error;
mod output;
mod render;

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use crate::api::Target;
use crate::cli::Cli;
use crate::commands::Ctx;
use crate::error::{Exit, Failure};
use crate::output::Out;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let program = cli::program_name(args.first());
    let code = match parse(program, args) {
        Ok(cli) => match run(cli) {
            Ok(()) => 0,
            Err(failure) => report(&failure),
        },
        Err(code) => code,
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The parsed command line, or the exit code after clap printed help (0)
/// or a usage error (64, where clap would exit 2).
fn parse(program: &'static str, args: Vec<OsString>) -> Result<Cli, i32> {
    let command = Cli::command().name(program).bin_name(program);
    let matches = command.try_get_matches_from(cli::rewrite_args(args));
    match matches.and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => Ok(cli),
        Err(e) => {
            // print() writes help to stdout and errors to stderr.
            let _ = e.print();
            Err(if e.use_stderr() {
                Exit::Usage as i32
            } else {
                0
            })
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let g = cli.global;
    let out = Out::new(
        g.quiet,
        g.silent,
        g.no_table_headers,
        g.formatter,
        Box::new(std::io::stdout().lock()),
    );
    let target = Target {
        url: g.url,
        username: g.username,
        password: g.password,
    };
    let mut ctx = Ctx::new(target, out, g.vhost, g.timeout, g.node)?;
    let result = commands::run(cli.command, &mut ctx);
    let flushed = ctx.out.flush().map_err(Failure::from);
    result.and(flushed)
}

fn report(failure: &Failure) -> i32 {
    if !failure.is_silent() {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "{failure}");
    }
    failure.code()
}
