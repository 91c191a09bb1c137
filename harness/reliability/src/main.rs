//! `herald-reliability`: runs every fault-injection scenario at full size (or
//! `--fast`, the `make test` sizes), prints the table and writes it to the file
//! named by `--out` (default `.run/reliability.md`; the captured log beside it,
//! `.log`). `--only <text>` runs the scenarios whose name contains the text.
//! Exits non-zero when a scenario fails. Everything runs on 127.0.0.1.

use std::io::Write;
use std::process::ExitCode;

use std::sync::{Arc, Mutex};

use herald_reliability::{count_panics, scenarios, secrets_report, table, Size};

/// Appends log output to the shared buffer.
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Every log line of every scenario is captured (and scanned for secrets at the
    // end); RUST_LOG sets the level as usual (default info).
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(herald_core::telemetry::filter(
            &std::env::var("RUST_LOG").unwrap_or_default(),
        ))
        .with_ansi(false)
        .with_writer(move || Capture(sink.clone()))
        .init();
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
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let started = std::time::Instant::now();
    let mut reports = match &only {
        None => scenarios::all(&size).await,
        Some(text) => scenarios::selected(&size, |name| name.contains(text.as_str())).await,
    };
    let log =
        String::from_utf8_lossy(&captured.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    reports.push(secrets_report(&log));
    if let Some(dir) = std::path::Path::new(&out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(format!("{out}.log"), log.as_bytes());
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
