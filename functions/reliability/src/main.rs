//! `herald-reliability`: runs every fault-injection scenario at full size (or
//! `--fast`, the `make test` sizes), prints the table and writes it to the file
//! named by `--out` (default `.run/reliability.md`). Exits non-zero when a scenario
//! fails. Everything runs on 127.0.0.1.

use std::io::Write;
use std::process::ExitCode;

use herald_reliability::{count_panics, scenarios, table, Size};

#[tokio::main]
async fn main() -> ExitCode {
    herald_core::telemetry::init_local();
    count_panics();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size = if args.iter().any(|a| a == "--fast") {
        Size::FAST
    } else {
        Size::FULL
    };
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| ".run/reliability.md".into());
    let started = std::time::Instant::now();
    let reports = scenarios::all(&size).await;
    let text = format!(
        "{}\nretry schedule × {}, budget {:.1} s, webhook timeout {} ms, {} pollers; ran in {:.0} s\n",
        table(&reports),
        size.retry_scale,
        size.budget().as_secs_f64(),
        size.webhook_timeout.as_millis(),
        size.pollers,
        started.elapsed().as_secs_f64()
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&out, &text) {
        let _ = writeln!(stdout, "could not write {out}: {e}");
    }
    if reports.iter().all(|r| r.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
