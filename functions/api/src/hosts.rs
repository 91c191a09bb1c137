//! The dev server's answer to DNS rebinding: it serves only requests addressed to a
//! loopback name. A web page on another site can make the browser resolve that site's
//! name to 127.0.0.1 and then call the dev server with it, but the browser still sends
//! the site's name as `Host`; refusing every `Host` that is not a loopback name keeps
//! such pages away from the API. The Lambda functions do not need it (API Gateway sets
//! `Host` to the API's own domain).

use std::net::{Ipv4Addr, Ipv6Addr};

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::error::{ApiError, Source};

/// `router`, answering 403 to every request whose `Host` (or, without one, the
/// request target's authority) is not a loopback name: `localhost` and its
/// subdomains (RFC 6761), `127.0.0.0/8`, `[::1]`, with any port or none.
pub fn loopback_only(router: Router) -> Router {
    router.layer(middleware::from_fn(refuse_other_hosts))
}

async fn refuse_other_hosts(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or_default())
        .or_else(|| req.uri().authority().map(|a| a.as_str()));
    if host.is_some_and(is_loopback_host) {
        return next.run(req).await;
    }
    tracing::warn!(
        host = host.unwrap_or_default(),
        "refused a request addressed to a name that is not loopback"
    );
    ApiError::new(
        StatusCode::FORBIDDEN,
        "the dev server answers only requests addressed to a loopback name (localhost, *.localhost, 127.0.0.0/8, [::1])",
        Some(Source::Header("Host".into())),
    )
    .into_response()
}

/// Whether `host` (`name[:port]`, `[v6][:port]`) names this machine's loopback.
fn is_loopback_host(host: &str) -> bool {
    let port_ok = |port: &str| port.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = host.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port_fits = after.is_empty() || after.strip_prefix(':').is_some_and(port_ok);
        return port_fits && v6.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port_ok(port) => name,
        Some(_) => return false,
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if let Ok(v4) = name.parse::<Ipv4Addr>() {
        return v4.is_loopback();
    }
    name == "localhost" || name.ends_with(".localhost")
}

#[cfg(test)]
mod tests {
    use super::is_loopback_host;

    #[test]
    fn loopback_names_and_addresses_pass_with_any_port_and_others_do_not() {
        for host in [
            "localhost",
            "localhost:3000",
            "LOCALHOST.:3000",
            "app.localhost",
            "a.b.localhost:1",
            "127.0.0.1",
            "127.0.0.1:3000",
            "127.255.255.254:80",
            "[::1]",
            "[::1]:3000",
            "[0:0:0:0:0:0:0:1]:3000",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "evil.example",
            "evil.example:3000",
            "localhost.evil.example",
            "evillocalhost",
            "127.0.0.1.nip.io",
            "10.0.0.1:3000",
            "0.0.0.0:3000",
            "[::2]:3000",
            "[::ffff:127.0.0.1]:3000",
            "[::1",
            "[::1]x",
            "localhost:30x0",
            "2130706433",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
