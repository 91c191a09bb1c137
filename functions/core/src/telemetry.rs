//! Logging setup shared by every binary: structured `tracing` output, JSON in Lambda.
//!
//! Whatever level is asked for, the libraries that print what passes through them are
//! held below TRACE: the AWS SDK's HTTP layer logs whole request and response bodies
//! at TRACE, which carry integration secrets (a DynamoDB read returns the stored
//! configuration); the Lambda runtime logs every raw invocation event at TRACE (an API
//! request's body and its `Authorization` header); axum logs rejections, which can
//! quote the body, at TRACE; the HTTP/TLS stack is held at INFO. The SDK's endpoint
//! resolution is held at INFO: at DEBUG it prints its parameters, which for some
//! services (EventBridge) carry the caller's identity, a customer's access key id;
//! request signing (`aws_sigv4`) logs the identity and the request, body included, at
//! TRACE.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

/// The AWS SDK's HTTP layer, the Lambda runtime, axum and the HTTP/TLS stack, and the
/// most each may log.
const CAPS: &[(&str, &str)] = &[
    ("aws_smithy_runtime", "debug"),
    (
        "aws_smithy_runtime::client::orchestrator::endpoints",
        "info",
    ),
    ("aws_smithy_runtime_api", "debug"),
    ("aws_smithy_http_client", "debug"),
    ("aws_sigv4", "debug"),
    ("lambda_runtime", "debug"),
    ("lambda_runtime_api_client", "debug"),
    ("lambda_http", "debug"),
    ("axum", "debug"),
    ("hyper", "info"),
    ("hyper_util", "info"),
    ("h2", "info"),
    ("rustls", "info"),
];

/// Verbosity of a level name (`off` least), or `None` when it is not one.
fn rank(level: &str) -> Option<usize> {
    ["off", "error", "warn", "info", "debug", "trace"]
        .iter()
        .position(|l| l.eq_ignore_ascii_case(level.trim()))
}

/// The directives for a requested level spec: the spec itself, with the capped targets
/// held at their cap. A cap only ever lowers a level: `info` keeps the SDK at `info`
/// (a cap written as a directive of its own would raise it to `debug`), `trace` holds it
/// at `debug`, `aws_smithy_runtime=trace` becomes `aws_smithy_runtime=debug`, and a spec
/// that names only some targets turns nothing else on.
pub fn directives(spec: &str) -> String {
    let spec = if spec.trim().is_empty() {
        "info"
    } else {
        spec.trim()
    };
    let cap_of = |target: &str| {
        CAPS.iter()
            .find(|(t, _)| target == *t || target.starts_with(&format!("{t}::")))
            .map(|(_, max)| *max)
    };
    let mut out: Vec<String> = Vec::new();
    let mut global = None;
    let mut named: Vec<&str> = Vec::new();
    // The level each named target ends up at, capped.
    let mut named_levels: Vec<(&str, Option<usize>)> = Vec::new();
    for d in spec.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.rsplit_once('=') {
            Some((target, level)) if rank(level).is_some() => {
                named.push(target);
                match cap_of(target) {
                    Some(max) if rank(level) > rank(max) => {
                        named_levels.push((target, rank(max)));
                        out.push(format!("{target}={max}"));
                    }
                    _ => {
                        named_levels.push((target, rank(level)));
                        out.push(d.to_owned());
                    }
                }
            }
            None if rank(d).is_some() => {
                global = rank(d);
                out.push(d.to_owned());
            }
            _ => out.push(d.to_owned()),
        }
    }
    for (target, max) in CAPS {
        // A capped target inside one named (`aws_smithy_runtime=debug` holds its
        // endpoint resolution at its own cap): the closest named parent's level.
        let parent = named_levels
            .iter()
            .filter(|(n, _)| target.starts_with(&format!("{n}::")))
            .max_by_key(|(n, _)| n.len());
        let mentioned = named
            .iter()
            .any(|n| n == target || n.starts_with(&format!("{target}::")));
        let level = match parent {
            Some((_, level)) => *level,
            None => global,
        };
        if !mentioned && level > rank(max) {
            out.push(format!("{target}={max}"));
        }
    }
    out.join(",")
}

/// The filter for a requested level spec (`info`, `debug,herald_core=trace`, ...);
/// see [`directives`]. An unreadable spec falls back to `info`.
pub fn filter(spec: &str) -> EnvFilter {
    EnvFilter::try_new(directives(spec)).unwrap_or_else(|_| EnvFilter::new(directives("info")))
}

/// Lambda: level from [`lambda_level`]; JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`; to
/// stdout.
pub fn init_lambda() {
    let spec = lambda_level(|name| std::env::var(name).ok());
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    init_lambda_with(&spec, json, std::io::stdout);
}

/// A Lambda function's level spec: `HERALD_LOG_LEVEL` (the stack's `LogLevel`), else
/// `AWS_LAMBDA_LOG_LEVEL` (the function's `ApplicationLogLevel`), else `RUST_LOG`,
/// else empty (INFO). The stack's own level comes first because Lambda's filter is
/// kept at INFO or below: above it Lambda would drop the EMF records, which carry no
/// level and count as INFO.
pub fn lambda_level(var: impl Fn(&str) -> Option<String>) -> String {
    var("HERALD_LOG_LEVEL")
        .or_else(|| var("AWS_LAMBDA_LOG_LEVEL"))
        .map(|l| l.to_ascii_lowercase())
        .or_else(|| var("RUST_LOG"))
        .unwrap_or_default()
}

/// [`init_lambda`]'s subscriber for level `spec`, JSON or not, writing to `writer`:
/// the bench installs the functions' logging through it, as they log in AWS (JSON,
/// INFO), to a pipe instead of stdout.
pub fn init_lambda_with<W>(spec: &str, json: bool, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(spec))
        .with_target(false)
        .without_time()
        .with_writer(writer);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Local binaries: level from `RUST_LOG`, human-readable, to stderr; in colour only
/// when stderr is a terminal and `NO_COLOR` is unset, so a log sent to a file or a
/// pipe holds no escape codes (and costs no time writing them).
pub fn init_local() {
    use std::io::IsTerminal;
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    tracing_subscriber::fmt()
        .with_env_filter(filter(&spec))
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").is_some(),
        ))
        .init();
}

/// How many lines a second each [`LineQuota`]'d INFO line may print: all of them
/// unless set (the Lambda functions, one request or batch an invocation), and
/// `HERALD_LOG_LINES_PER_SECOND` in the dev server (see [`set_lines_per_second`]).
static LINES_PER_SECOND: AtomicU32 = AtomicU32::new(u32::MAX);

/// Sets how many lines a second each quota'd line may print (0: none); the rest are
/// left out and counted, and the count is said before the next line printed.
pub fn set_lines_per_second(lines: u32) {
    LINES_PER_SECOND.store(lines, Ordering::Relaxed);
}

/// A per-second budget for one routine INFO line (the dev server's request line and
/// batch line): at thousands of events a second, writing them all costs the dev
/// server more CPU than delivering, and no one reads them. A past second's lines left
/// out are counted and reported with the first line admitted after it.
pub struct LineQuota {
    /// Which line it is, as the count of those left out names it (`request`).
    line: &'static str,
    /// The second (since the process's first quota'd line) in the high half, the
    /// lines asked for in it in the low half.
    state: AtomicU64,
}

/// Whether a quota'd line may be written.
#[derive(Debug, PartialEq, Eq)]
enum Admit {
    /// Write it; `left_out` lines were left out in the last second that had any
    /// before this one (say so first when not zero).
    Yes {
        /// Lines left out before it, to be said first.
        left_out: u32,
    },
    /// Leave it out (it is counted).
    No,
}

impl LineQuota {
    /// The quota of the line named `line`, none asked for yet.
    pub const fn new(line: &'static str) -> Self {
        Self {
            line,
            state: AtomicU64::new(0),
        }
    }

    /// Whether a line may be written now, under the process's quota; when a past
    /// second left some out, says how many first.
    pub fn admit(&self) -> bool {
        let limit = LINES_PER_SECOND.load(Ordering::Relaxed);
        if limit == u32::MAX {
            return true;
        }
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let second = START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_secs();
        match self.admit_at(second, limit) {
            Admit::No => false,
            Admit::Yes { left_out: 0 } => true,
            Admit::Yes { left_out } => {
                tracing::info!(
                    line = self.line,
                    left_out,
                    "lines left out in a second, past HERALD_LOG_LINES_PER_SECOND"
                );
                true
            }
        }
    }

    /// [`LineQuota::admit`] in `second`, allowing `limit` lines a second.
    fn admit_at(&self, second: u64, limit: u32) -> Admit {
        let mut current = self.state.load(Ordering::Relaxed);
        loop {
            let (at, asked) = (current >> 32, current as u32);
            let (next, admit) = if at == second {
                let admit = if asked < limit {
                    Admit::Yes { left_out: 0 }
                } else {
                    Admit::No
                };
                ((at << 32) | u64::from(asked.saturating_add(1)), admit)
            } else {
                let left_out = asked.saturating_sub(limit);
                let admit = if limit > 0 {
                    Admit::Yes { left_out }
                } else {
                    Admit::No
                };
                // A second with no quota keeps the count of what it left out.
                let asked = if limit > 0 {
                    1
                } else {
                    asked.saturating_add(1)
                };
                (((second & 0xffff_ffff) << 32) | u64::from(asked), admit)
            };
            match self.state.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return admit,
                Err(seen) => current = seen,
            }
        }
    }
}

/// Whether local logs are in colour: on a terminal, unless `NO_COLOR` is set.
fn colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::{colour, directives, lambda_level, Admit, LineQuota};

    #[test]
    fn past_its_quota_a_line_is_left_out_and_the_next_seconds_first_line_counts_what_was() {
        let quota = LineQuota::new("test");
        let admitted: Vec<Admit> = (0..5).map(|_| quota.admit_at(7, 3)).collect();
        assert_eq!(
            admitted,
            vec![
                Admit::Yes { left_out: 0 },
                Admit::Yes { left_out: 0 },
                Admit::Yes { left_out: 0 },
                Admit::No,
                Admit::No
            ]
        );
        assert_eq!(quota.admit_at(9, 3), Admit::Yes { left_out: 2 });
        assert_eq!(quota.admit_at(9, 3), Admit::Yes { left_out: 0 });
    }

    #[test]
    fn a_quota_of_zero_writes_nothing() {
        let quota = LineQuota::new("test");
        assert_eq!(quota.admit_at(1, 0), Admit::No);
        assert_eq!(quota.admit_at(1, 0), Admit::No);
        assert_eq!(quota.admit_at(2, 0), Admit::No);
    }

    #[test]
    fn threads_sharing_a_quota_never_write_more_lines_in_a_second_than_it_allows() {
        let quota = std::sync::Arc::new(LineQuota::new("test"));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let quota = quota.clone();
                std::thread::spawn(move || {
                    (0..1_000)
                        .filter(|_| quota.admit_at(3, 100) != Admit::No)
                        .count()
                })
            })
            .collect();
        let written: usize = threads
            .into_iter()
            .map(|t| t.join().expect("a thread asking the quota"))
            .sum();
        assert_eq!(written, 100);
        assert_eq!(quota.admit_at(4, 100), Admit::Yes { left_out: 3_900 });
    }

    #[test]
    fn without_a_quota_every_line_is_written() {
        let quota = LineQuota::new("test");
        assert!((0..10_000).all(|_| quota.admit()));
    }

    #[test]
    fn local_logs_are_in_colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, false));
        assert!(!colour(false, false));
        assert!(!colour(true, true));
        assert!(!colour(false, true));
    }

    #[test]
    fn the_stacks_log_level_comes_before_the_one_lambda_filters_at() {
        // The template keeps Lambda's filter at INFO or below (EMF records count as
        // INFO) and gives LogLevel as HERALD_LOG_LEVEL.
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both = env(&[
            ("HERALD_LOG_LEVEL", "WARN"),
            ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ]);
        assert_eq!(lambda_level(both), "warn");
        let lambda = env(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG"), ("RUST_LOG", "trace")]);
        assert_eq!(lambda_level(lambda), "debug");
        assert_eq!(
            lambda_level(env(&[("RUST_LOG", "herald_core=trace")])),
            "herald_core=trace"
        );
        assert_eq!(lambda_level(env(&[])), "");
    }

    #[test]
    fn the_default_and_info_leave_the_sdk_at_info() {
        assert_eq!(directives(""), "info");
        assert_eq!(directives("info"), "info");
        assert_eq!(directives(" warn "), "warn");
    }

    #[test]
    fn trace_holds_the_sdk_the_lambda_runtime_and_axum_at_debug_and_the_http_stack_at_info() {
        assert_eq!(
            directives("trace"),
            "trace,aws_smithy_runtime=debug,aws_smithy_runtime::client::orchestrator::endpoints=info,aws_smithy_runtime_api=debug,aws_smithy_http_client=debug,aws_sigv4=debug,lambda_runtime=debug,lambda_runtime_api_client=debug,lambda_http=debug,axum=debug,hyper=info,hyper_util=info,h2=info,rustls=info"
        );
        assert_eq!(
            directives("debug"),
            "debug,aws_smithy_runtime::client::orchestrator::endpoints=info,hyper=info,hyper_util=info,h2=info,rustls=info"
        );
    }

    #[test]
    fn a_capped_target_asked_for_by_name_is_held_at_its_cap() {
        assert_eq!(
            directives("warn,aws_smithy_runtime=trace,hyper::proto=debug,lambda_runtime=trace"),
            "warn,aws_smithy_runtime=debug,hyper::proto=info,lambda_runtime=debug,aws_smithy_runtime::client::orchestrator::endpoints=info"
        );
    }

    #[test]
    fn the_sdks_endpoint_resolution_which_shows_an_access_key_id_is_held_at_info() {
        // Its DEBUG line prints the endpoint parameters, which for EventBridge hold the
        // integration's identity: the access key id in clear.
        let endpoints = "aws_smithy_runtime::client::orchestrator::endpoints=info";
        assert_eq!(
            directives("debug"),
            format!("debug,{endpoints},hyper=info,hyper_util=info,h2=info,rustls=info")
        );
        assert_eq!(
            directives("warn,aws_smithy_runtime=trace"),
            format!("warn,aws_smithy_runtime=debug,{endpoints}")
        );
        assert_eq!(
            directives("debug,aws_smithy_runtime=debug"),
            format!("debug,aws_smithy_runtime=debug,{endpoints},hyper=info,hyper_util=info,h2=info,rustls=info")
        );
        assert_eq!(
            directives("aws_smithy_runtime::client=debug"),
            format!("aws_smithy_runtime::client=debug,{endpoints}")
        );
        assert_eq!(
            directives("info,aws_smithy_runtime=info"),
            "info,aws_smithy_runtime=info"
        );
    }

    #[test]
    fn request_signing_which_traces_the_identity_and_the_body_is_held_at_debug() {
        assert!(
            directives("trace").contains(",aws_sigv4=debug,"),
            "{}",
            directives("trace")
        );
        assert_eq!(directives("aws_sigv4=trace"), "aws_sigv4=debug");
    }

    #[test]
    fn a_spec_naming_only_some_targets_turns_nothing_else_on() {
        assert_eq!(directives("herald_core=trace"), "herald_core=trace");
    }
}
