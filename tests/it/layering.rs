//! The crate's shape, checked: layers import one way, and no source file
//! grows past what a reader takes in at once.
//!
//! Layers, top to bottom (a module may import only from modules ranked
//! below it): `server` → `listeners` → `admin`, `amqp` → `broker` → `tls` → `config` → `startup`
//! → `exchange` → `queue` → `telemetry` → `store` → `metrics` → `message` → `error` →
//! `fields`, with `fuzzing` (the fuzz targets' hooks) above them all. The
//! ranks live in [`RANKS`]; a new top-level module must be given one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top-level modules of `src/` and their rank: higher imports lower.
const RANKS: &[(&str, u32)] = &[
    ("main", 110),
    ("lib", 110),
    // Entry points for the fuzz targets: above everything they drive.
    ("fuzzing", 105),
    ("server", 100),
    ("listeners", 95),
    ("admin", 90),
    ("amqp", 90),
    // Shovels and federation: clients of other brokers, publishing here.
    ("links", 85),
    ("broker", 80),
    ("tls", 77),
    ("config", 75),
    ("startup", 72),
    ("exchange", 70),
    ("queue", 60),
    // The schema registry: pure, used by the publish path and the queues.
    ("schema", 57),
    // Message spans: used from the connection down to the queues.
    ("telemetry", 55),
    ("store", 50),
    ("metrics", 45),
    ("message", 40),
    ("error", 30),
    ("fields", 20),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|(_, r)| *r)
}

fn source_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            source_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a file belongs to (`src/queue/ready.rs` → `queue`).
fn module_of(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_string()
}

/// Every `crate::<module>` a file names.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at + "crate::".len()..];
        let name: String = tail
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `crate::{a, b}` imports are not used in this crate; a name is
        // always spelled out.
        if !name.is_empty() {
            found.insert(name);
        }
        rest = tail;
    }
    found
}

#[test]
fn layers_import_one_way() {
    let mut files = Vec::new();
    source_files(&src(), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let from = module_of(file);
        let Some(from_rank) = rank(&from) else {
            violations.push(format!("{}: module '{from}' has no rank", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for to in imports(&text) {
            if to == from {
                continue;
            }
            match rank(&to) {
                Some(to_rank) if to_rank < from_rank => {}
                Some(_) => violations.push(format!(
                    "{}: '{from}' imports '{to}', which is not below it",
                    file.display()
                )),
                None => violations.push(format!(
                    "{}: imports '{to}', which has no rank",
                    file.display()
                )),
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// About a screen's worth of reading per file: past it, a module has grown
/// a second responsibility and is split.
const MAX_LINES: usize = 600;

#[test]
fn no_source_file_is_longer_than_a_reader_takes_in() {
    let mut files = Vec::new();
    source_files(&src(), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines (split by responsibility):\n{}",
        long.join("\n")
    );
}
