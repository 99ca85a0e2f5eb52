//! `veil keys list`: the keys of a directory, without their bytes.

use std::path::PathBuf;

use anyhow::anyhow;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{CliResult, print, usage};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Every key of a directory: id, created (the file's time), age,
    /// fingerprint (a short HMAC of a fixed string, never key bytes), and
    /// which routes use it.
    List {
        /// Key directory (`<key_id>.key` files).
        #[arg(
            long,
            value_name = "DIR",
            env = "VEIL_KEYS",
            required_unless_present = "config"
        )]
        dir: Option<PathBuf>,
        /// The active key; default: the only key in the directory.
        #[arg(long, value_name = "ID", conflicts_with = "config")]
        key_id: Option<String>,
        /// Take the directory, the active key and the routes from this
        /// pipeline config.
        #[arg(long, value_name = "FILE", conflicts_with = "dir")]
        config: Option<PathBuf>,
    },
}

pub fn run(args: Args) -> CliResult {
    let Command::List {
        dir,
        key_id,
        config,
    } = args.command;
    // Each route and its key id (`None`: the active key), from the config.
    type Routes = Vec<(String, Option<String>)>;
    let (dir, active, routes): (PathBuf, Option<String>, Routes) = match config {
        Some(path) => {
            let config = veil::config::load(&path).map_err(usage)?;
            let routes = config
                .route_keys()
                .into_iter()
                .map(|(n, _, k)| (n.to_owned(), k.map(str::to_owned)))
                .collect();
            (config.keys.dir.clone(), config.keys.active.clone(), routes)
        }
        None => (
            dir.ok_or_else(|| usage(anyhow!("give --dir or --config")))?,
            key_id,
            Vec::new(),
        ),
    };
    let ring = veil::keys::load_dir(&dir, active.as_deref()).map_err(usage)?;
    super::warn_keys(&ring);
    let now = OffsetDateTime::now_utc();
    print(format_args!(
        "id\tcreated\tage_days\tfingerprint\tused_by\n"
    ))?;
    for path in veil::keys::key_file_paths(&dir) {
        let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let Some(key) = ring.get(id) else { continue };
        let created = key.created.map(OffsetDateTime::from);
        let (created_text, age) = match created {
            Some(t) => (
                t.format(&Rfc3339).unwrap_or_default(),
                format!("{}", (now - t).whole_days()),
            ),
            None => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let active = ring.active().id == key.id;
        let users: Vec<&str> = routes
            .iter()
            .filter(|(_, k)| k.as_deref().map_or(active, |k| k == key.id))
            .map(|(r, _)| r.as_str())
            .collect();
        let used_by = match (active, users.is_empty()) {
            (true, true) => "active".to_owned(),
            (true, false) => format!("active: {}", users.join(", ")),
            (false, false) => format!("routes: {}", users.join(", ")),
            (false, true) => "retired (kept for look-ups and suppression entries)".to_owned(),
        };
        print(format_args!(
            "{}\t{created_text}\t{age}\t{}\t{used_by}\n",
            key.id,
            key.fingerprint()
        ))?;
    }
    Ok(())
}
