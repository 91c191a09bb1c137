//! `herald-bench`: Herald measured against baselines run side by side in the same
//! run, reported as ratios (absolute rates on a shared machine are noise; ratios are
//! not). Everything runs on 127.0.0.1. `make bench` builds what it needs, starts moto
//! and runs it; see `infra/bench.sh`.
//!
//! ```text
//! herald-bench [--out FILE] [--runs N] [--only tput,log,latency,init,batch,artifacts,ingest,pipeline,e2e,cost,plumbing]
//!              [--lambda-dir DIR] [--artifacts ARCH=BINS:ZIPS,...] [--local PATH]
//! herald-bench receiver        # the receiver process the others start
//! herald-bench forwarder       # the `e2e` section's baseline in the dev server's place
//! herald-bench sink            # reads its stdin to the end: where the functions' logs go
//! herald-bench meter URL FILE  # the recording proxy in front of moto (the cost section)
//! ```
//!
//! - `tput`: R_tput, R_sign, CPU per event (fan-out handler vs a raw reqwest loop
//!   to the same receiver).
//! - `log`: CPU per write of the fanout function's DynamoDB log, by entries per write.
//! - `latency`: open-loop p50/p99 at half the raw loop's best rate.
//! - `init`: R_init and idle RSS of the release bootstraps in `--lambda-dir` against
//!   the hello-world built beside them, on a mock Runtime API.
//! - `batch`: the `fanout` bootstrap's peak RSS on a 1,000-record batch (moto).
//! - `artifacts`: bootstrap and zip sizes per architecture.
//! - `ingest`: ingest vs a raw `SendMessageBatch` loop on moto.
//! - `pipeline`: events/s end to end through the dev server (`--local`), embedded and
//!   on moto.
//! - `e2e`: the dev server as `make run` starts it, one event per request from 16
//!   and 64 connections: accepted/s, delivered/s, p50/p99 from send to receipt, the
//!   server's CPU per event, nothing lost; the client, the server and the receiver
//!   each a process; against the forwarder (the least a server in that place does).
//! - `cost`: what the deployed stack would be billed for per delivery (requests and
//!   request units counted on the wire, CPU and log bytes measured), per million
//!   deliveries at us-east-1 list prices, beside EventBridge API destinations.
//! - `plumbing`: Herald's hand-written pieces against the maintained libraries doing
//!   the same work (its HTTP client vs hyper-util's and reqwest, its `BatchWriter` vs
//!   the SDK's `batch_write_item`); see `docs/decisions/`.
//!
//! Writes the Markdown report to FILE (default `.run/bench.md`); exits non-zero when
//! any section could not be measured (the report says which and why).

mod artifacts;
mod cost;
mod forwarder;
mod lambda;
mod meter;
mod moto;
mod pipeline;
mod plumbing;
mod receiver;
mod stats;
mod throughput;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use herald_core::metrics::MetricsOut;

use crate::lambda::Function;
use crate::receiver::Receiver;

/// mimalloc, as every Herald binary (see [`herald_core::Allocator`]).
#[global_allocator]
static ALLOCATOR: herald_core::Allocator = herald_core::Allocator;

const SECTIONS: [&str; 11] = [
    "tput",
    "log",
    "latency",
    "init",
    "batch",
    "artifacts",
    "ingest",
    "pipeline",
    "e2e",
    "cost",
    "plumbing",
];

/// What to run, from the command line.
struct Args {
    out: String,
    runs: usize,
    only: Vec<String>,
    lambda_dir: Option<PathBuf>,
    artifacts: Vec<(String, PathBuf, PathBuf)>,
    local: Option<PathBuf>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Self, String> {
        let value = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let only: Vec<String> = match value("--only") {
            Some(list) => list.split(',').map(str::to_owned).collect(),
            None => SECTIONS.iter().map(|s| (*s).to_owned()).collect(),
        };
        if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
            return Err(format!("unknown section {bad:?}; sections: {SECTIONS:?}"));
        }
        let mut artifacts = Vec::new();
        for spec in value("--artifacts").unwrap_or_default().split(',') {
            if spec.is_empty() {
                continue;
            }
            let parsed = spec
                .split_once('=')
                .and_then(|(arch, dirs)| Some((arch, dirs.split_once(':')?)));
            let Some((arch, (bins, zips))) = parsed else {
                return Err(format!("--artifacts takes ARCH=BINS:ZIPS, not {spec:?}"));
            };
            artifacts.push((arch.to_owned(), bins.into(), zips.into()));
        }
        Ok(Self {
            out: value("--out").unwrap_or_else(|| ".run/bench.md".into()),
            runs: value("--runs")
                .and_then(|r| r.parse().ok())
                .unwrap_or(5)
                .max(1),
            only,
            lambda_dir: value("--lambda-dir").map(PathBuf::from),
            artifacts,
            local: value("--local").map(PathBuf::from),
        })
    }

    fn wants(&self, section: &str) -> bool {
        self.only.iter().any(|s| s == section)
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.first().map(String::as_str) == Some("receiver") {
        runtime.block_on(receiver::serve());
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("forwarder") {
        runtime.block_on(forwarder::serve());
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("meter") {
        if let (Some(upstream), Some(record)) = (args.get(1), args.get(2)) {
            runtime.block_on(meter::serve(upstream.clone(), record.into()));
        }
        return ExitCode::SUCCESS;
    }
    if args.first().map(String::as_str) == Some("sink") {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        return ExitCode::SUCCESS;
    }
    let args = match Args::parse(&args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "herald-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let (text, complete) = runtime.block_on(run(&args));
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    if let Some(dir) = Path::new(&args.out).parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::write(&args.out, text);
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs `work` on a current-thread runtime of its own thread, as the functions run
/// (their bootstraps use one): the handler and the raw loop it is compared with get the
/// same single-threaded scheduler.
fn on_function_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("no runtime: {e}"))?
            .block_on(work)
    })
    .join()
    .map_err(|_| "the measurement thread panicked".to_owned())?
}

/// Installs the functions' logging (JSON at INFO, as the template configures them)
/// writing to a `herald-bench sink` child; the child, ended when dropped, with the
/// same pipe as the functions' stdout for their EMF records.
fn log_sink() -> Result<Sink, String> {
    let mut child = std::process::Command::new(
        std::env::current_exe().map_err(|e| format!("no path to herald-bench: {e}"))?,
    )
    .arg("sink")
    .stdin(std::process::Stdio::piped())
    .spawn()
    .map_err(|e| format!("starting the log sink: {e}"))?;
    let pipe = std::fs::File::from(std::os::fd::OwnedFd::from(
        child.stdin.take().ok_or("the log sink has no stdin")?,
    ));
    let metrics = pipe
        .try_clone()
        .map_err(|e| format!("the log sink's pipe: {e}"))?;
    herald_core::telemetry::init_lambda_with("info", true, Mutex::new(Counted(pipe)));
    Ok(Sink {
        child,
        stdout: MetricsOut::Writer(Arc::new(Mutex::new(Counted(metrics)))),
    })
}

/// Bytes the functions under measurement have written to their log and stdout: what
/// CloudWatch Logs would ingest (the cost section).
static FUNCTION_OUTPUT: AtomicU64 = AtomicU64::new(0);

/// A writer that adds what it writes to [`FUNCTION_OUTPUT`].
struct Counted<W>(W);

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        FUNCTION_OUTPUT.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The log sink's process, killed when dropped.
struct Sink {
    child: std::process::Child,
    /// Where the fan-out under measurement writes its EMF records, as the function
    /// does to its stdout in Lambda: the sink's pipe.
    stdout: MetricsOut,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Herald functions' bootstraps in `dir`, each with `env`.
fn functions(dir: &Path, env: &[(String, String)]) -> Vec<Function> {
    ["api", "ingest", "fanout"]
        .into_iter()
        .map(|name| Function::at(dir, name, env.to_vec()))
        .collect()
}

/// Runs the chosen sections; the report, and whether every one was measured.
async fn run(args: &Args) -> (String, bool) {
    let logs = Path::new(".run/bench-logs").to_path_buf();
    let _ = std::fs::create_dir_all(&logs);
    let mut report = String::from("# Herald benchmarks\n\n");
    let mut complete = true;
    // When the section being measured started: each takes up where the last ended.
    let since = std::cell::Cell::new(std::time::Instant::now());
    let mut timings = String::new();
    let mut section = |title: &str, result: Result<String, String>| {
        let took = since.replace(std::time::Instant::now()).elapsed().as_secs();
        let _ = writeln!(std::io::stderr(), "herald-bench: {title}: {took} s");
        timings.push_str(&format!("| {title} | {took} |\n"));
        report.push_str(&format!("## {title}\n\n"));
        match result {
            Ok(text) => report.push_str(&text),
            Err(e) => {
                complete = false;
                report.push_str(&format!("**not measured**: {e}\n"));
            }
        }
        report.push('\n');
    };
    let receiver = match Receiver::start() {
        Ok(r) => r,
        Err(e) => return (format!("herald-bench: {e}\n"), false),
    };
    // The handler logs as the functions do in AWS (JSON lines at INFO, the template's
    // logging config), to a pipe read by another process, as Lambda's stdout is.
    let sink = if ["tput", "log", "latency", "cost"]
        .iter()
        .any(|s| args.wants(s))
    {
        match log_sink() {
            Ok(sink) => Some(sink),
            Err(e) => return (format!("herald-bench: {e}\n"), false),
        }
    } else {
        None
    };
    let function_stdout = || {
        sink.as_ref()
            .map_or(MetricsOut::Stdout, |s| s.stdout.clone())
    };
    let moto = if ["batch", "ingest", "pipeline", "cost"]
        .iter()
        .any(|s| args.wants(s))
    {
        Some(moto::Moto::setup().await)
    } else {
        None
    };
    let moto_ready = || match &moto {
        Some(Ok(m)) => Ok(m),
        Some(Err(e)) => Err(e.clone()),
        None => Err("moto was not set up".to_owned()),
    };
    let lambda_dir = || {
        args.lambda_dir
            .clone()
            .ok_or_else(|| "--lambda-dir (the release bootstraps) is not given".to_owned())
    };
    // The receiver, the log sink and moto are set up: the first section starts now.
    since.set(std::time::Instant::now());

    if args.wants("tput") {
        section(
            "Throughput, CPU and latency: fan-out handler vs raw reqwest loop",
            on_function_runtime(throughput::run(
                receiver.url(),
                args.runs,
                function_stdout(),
            ))
            .and_then(|t| Ok(format!("{t}\n{}", throughput::work_table(args.runs)?))),
        );
    }
    if args.wants("log") {
        section(
            "The fanout function's log: CPU per write",
            on_function_runtime(throughput::log_table(receiver.url(), args.runs)),
        );
    }
    if args.wants("latency") {
        section(
            "Latency, open loop: fan-out handler vs raw reqwest loop",
            on_function_runtime(throughput::latency(
                receiver.url(),
                args.runs,
                function_stdout(),
            )),
        );
    }
    if args.wants("init") {
        let result = async {
            let dir = lambda_dir()?;
            // The functions start as in AWS (the aws backend); nothing is called at
            // init, and the endpoint, if any is set, is moto on loopback.
            let env = match moto_ready() {
                Ok(m) => m.lambda_env(),
                Err(_) => moto::offline_env(),
            };
            let hello = Function::at(&dir, "bench-hello", Vec::new());
            lambda::init_table(&hello, &functions(&dir, &env), args.runs, &logs).await
        }
        .await;
        section(
            "Cold start and idle memory: release bootstraps vs hello-world",
            result,
        );
    }
    // Before the sections that fill moto's DynamoDB: its TransactWriteItems
    // deep-copies every table of the region, so what is already there slows it.
    if args.wants("pipeline") {
        let result = async {
            let binary = args
                .local
                .clone()
                .ok_or("--local (the herald-local binary) is not given")?;
            let env = moto_ready().ok().map(|m| m.dev_server_env());
            let table = pipeline::table(&binary, &receiver, env, args.runs, &logs).await?;
            if moto_ready().is_err() {
                return Err(format!("{table}\n(moto rows missing: moto is not running)"));
            }
            Ok(table)
        }
        .await;
        section("Pipeline end to end", result);
    }
    if args.wants("e2e") {
        let result = async {
            let binary = args
                .local
                .clone()
                .ok_or("--local (the herald-local binary) is not given")?;
            pipeline::per_request_table(&binary, &receiver, 20_000, args.runs, &logs).await
        }
        .await;
        section(
            "`make run` end to end: one event per request, 16 and 64 connections",
            result,
        );
    }
    if args.wants("batch") {
        let result = async {
            let (dir, m) = (lambda_dir()?, moto_ready()?);
            let before = receiver.count().await?;
            let runs = args.runs;
            let (peaks, records) =
                moto::batch_peak(m, &dir, &receiver.url(), 1000, runs, &logs).await?;
            let delivered = receiver.count().await? - before;
            if delivered < records * runs {
                return Err(format!(
                    "the receiver got {delivered} of {} deliveries",
                    records * runs
                ));
            }
            Ok(format!(
                "| measurement | result |\n|---|---|\n{}\n{runs} invocations, each a fresh process; every record delivered to the receiver ({delivered} POSTs) and its attempt recorded in DynamoDB on moto\n",
                moto::peak_line(&peaks, records)
            ))
        }
        .await;
        section("Fan-out memory on a 1,000-record batch", result);
    }
    if args.wants("artifacts") {
        section(
            "Artifact sizes",
            if args.artifacts.is_empty() {
                Err("--artifacts is not given".into())
            } else {
                artifacts::table(&args.artifacts)
            },
        );
    }
    if args.wants("ingest") {
        let result =
            async { moto::ingest_table(moto_ready()?, &receiver.url(), args.runs).await }.await;
        section("Ingest on moto vs raw SendMessageBatch", result);
    }
    if args.wants("cost") {
        let result = async {
            cost::table(
                moto_ready()?,
                &receiver,
                args.runs,
                &FUNCTION_OUTPUT,
                function_stdout(),
                &logs,
            )
            .await
        }
        .await;
        section("Cost per million deliveries", result);
    }
    if args.wants("plumbing") {
        section(
            "Hand-written plumbing vs libraries",
            on_function_runtime(plumbing::table(receiver.url(), args.runs)),
        );
    }
    report.push_str(&format!(
        "## How long each section took\n\n| section | seconds |\n|---|---:|\n{timings}\nwall time of the measuring, the builds before it not counted\n"
    ));
    (report, complete)
}
