//! import_definitions and export_definitions: RabbitMQ's definitions JSON,
//! through `GET`/`POST /api/definitions`. The file is checked to be JSON
//! here so a typo fails before anything is sent.

use std::io::Read;

use serde_json::Value;

use super::Ctx;
use crate::error::Failure;

pub fn import(ctx: &mut Ctx, file: Option<&str>) -> Result<(), Failure> {
    let text = match file {
        None | Some("-") => {
            ctx.out
                .banner("Importing definitions in JSON from standard input ...")?;
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Failure::data(format!("Failed to read standard input: {e}")))?;
            s
        }
        Some(path) => {
            if !std::path::Path::new(path).exists() {
                return Err(Failure::usage(format!(
                    "Bad argument: File {path} does not exist"
                )));
            }
            ctx.out.banner(&format!(
                "Importing definitions in JSON from a file at \"{path}\" ..."
            ))?;
            std::fs::read_to_string(path)
                .map_err(|e| Failure::data(format!("Failed to read {path}: {e}")))?
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(_)) => {}
        Ok(_) => {
            return Err(Failure::data(
                "Failed to deserialise input (format: JSON) (error: not a JSON object)",
            ));
        }
        Err(e) => {
            return Err(Failure::data(format!(
                "Failed to deserialise input (format: JSON) (error: {e})"
            )));
        }
    }
    ctx.api.post_raw("/api/definitions", text)?.ok(&ctx.api)?;
    ctx.out.banner(
        "Successfully started definition import. \
         This process is asynchronous and can take some time.",
    )?;
    ctx.done()
}

pub fn export(ctx: &mut Ctx, file: &str) -> Result<(), Failure> {
    if file == "-" {
        let reply = ctx.api.get("/api/definitions")?.ok(&ctx.api)?;
        ctx.out.raw(&reply.body)?;
        if !reply.body.ends_with('\n') {
            ctx.out.raw("\n")?;
        }
        return Ok(());
    }
    ctx.out.banner(&format!(
        "Exporting definitions in JSON to a file at \"{file}\" ..."
    ))?;
    let reply = ctx.api.get("/api/definitions")?.ok(&ctx.api)?;
    // Checked before writing: a truncated answer must not replace a file.
    reply.json()?;
    std::fs::write(file, reply.body.as_bytes())
        .map_err(|e| Failure::io(format!("Failed to write {file}: {e}")))?;
    ctx.done()
}
