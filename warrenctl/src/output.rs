//! Where output goes, and which of it: rabbitmqctl prints informational
//! banners ("Listing queues for vhost / ...") unless -q or -s, a header
//! row unless -s (or --no-table-headers), and neither with
//! `--formatter json`. Results go to stdout, errors (main.rs) to stderr.

use std::io::Write;

use serde_json::Value;

use crate::render;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Formatter {
    Table,
    Json,
}

pub struct Out {
    pub quiet: bool,
    pub silent: bool,
    pub no_headers: bool,
    pub formatter: Formatter,
    w: Box<dyn Write>,
}

impl Out {
    pub fn new(
        quiet: bool,
        silent: bool,
        no_headers: bool,
        formatter: Formatter,
        w: Box<dyn Write>,
    ) -> Self {
        Out {
            quiet,
            silent,
            no_headers,
            formatter,
            w,
        }
    }

    pub fn json(&self) -> bool {
        self.formatter == Formatter::Json
    }

    /// An informational line, printed before the work is done.
    pub fn banner(&mut self, text: &str) -> std::io::Result<()> {
        if self.quiet || self.silent || self.json() {
            return Ok(());
        }
        writeln!(self.w, "{text}")?;
        self.w.flush()
    }

    /// A result line (printed whatever -q/-s say, but not in JSON mode).
    pub fn line(&mut self, text: &str) -> std::io::Result<()> {
        if self.json() {
            return Ok(());
        }
        writeln!(self.w, "{text}")
    }

    /// Raw text, whatever the mode.
    pub fn raw(&mut self, text: &str) -> std::io::Result<()> {
        self.w.write_all(text.as_bytes())
    }

    /// A list command's rows in the chosen format.
    pub fn list(
        &mut self,
        columns: &[&str],
        text_rows: &[Vec<String>],
        json_rows: &[Vec<Value>],
    ) -> std::io::Result<()> {
        let s = if self.json() {
            render::list_json(columns, json_rows)
        } else {
            render::list_text(columns, text_rows, !(self.silent || self.no_headers))
        };
        self.raw(&s)
    }

    /// One JSON document on a line (the JSON formatter's single results).
    pub fn json_value(&mut self, v: &Value) -> std::io::Result<()> {
        writeln!(self.w, "{v}")
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}
