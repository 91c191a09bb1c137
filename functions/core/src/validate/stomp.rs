//! A `stomp` integration's configuration: broker addresses (TLS unless the deployment
//! allows plain STOMP), credentials, destination and optional virtual host.

use super::*;

/// The STOMP schemes Herald accepts, and whether each uses TLS.
pub const STOMP_SCHEMES: &[(&str, bool)] = &[
    ("stomp", false),
    ("tcp", false),
    ("stomp+ssl", true),
    ("ssl", true),
];

pub(super) fn parse(c: &mut Config<'_>, policy: Policy) -> Option<StompConfig> {
    c.only(
        IntegrationType::Stomp,
        &["addresses", "destination", "username", "password", "host"],
    );
    let addresses = match c.obj.get("addresses") {
        None | Some(Value::Null) => {
            c.error("addresses", "is required: a list of broker URLs, e.g. [\"stomp+ssl://broker.example.com:61614\"]");
            None
        }
        Some(Value::Array(items)) if items.is_empty() => {
            c.error("addresses", "must list at least one broker");
            None
        }
        Some(Value::Array(items)) if items.len() > MAX_ADDRESSES => {
            c.error(
                "addresses",
                format!("must list at most {MAX_ADDRESSES} brokers"),
            );
            None
        }
        Some(Value::Array(items)) => {
            let mut ok = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let pointer = format!("/data/configuration/addresses/{i}");
                match item.as_str().map(|a| check_stomp_address(a, policy)) {
                    Some(Ok(())) => ok.push(item.as_str().unwrap_or_default().to_owned()),
                    Some(Err(detail)) => c.errors.push(FieldError::new(pointer, detail)),
                    None => c.errors.push(FieldError::new(pointer, "must be a string")),
                }
            }
            (ok.len() == items.len()).then_some(ok)
        }
        Some(_) => {
            c.error("addresses", "must be an array of broker URLs");
            None
        }
    };
    let destination = c.required_str("destination", 1024);
    let username = c.required_str("username", 256);
    let password = c.required_str("password", MAX_SECRET).map(Secret::new);
    let virtual_host = c.optional_str("host", 255);
    Some(StompConfig {
        addresses: addresses?,
        destination: destination?,
        username: username?,
        password: password?,
        virtual_host,
    })
}

fn check_stomp_address(raw: &str, policy: Policy) -> Result<(), String> {
    const SHAPE: &str = "must be a broker URL: stomp://, stomp+ssl://, ssl:// or tcp:// with a host and an optional port";
    if raw.len() > MAX_URL {
        return Err(SHAPE.into());
    }
    let url = Url::parse(raw).map_err(|_| SHAPE.to_owned())?;
    let Some((_, tls)) = STOMP_SCHEMES.iter().find(|(s, _)| *s == url.scheme()) else {
        return Err(SHAPE.into());
    };
    if !tls && !policy.allow_plain_stomp {
        return Err(
            "must use TLS (stomp+ssl:// or ssl://): this deployment does not allow plain STOMP, which would send the broker password in clear text".into(),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(SHAPE.into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials; use configuration.username and password".into());
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(SHAPE.into());
    }
    Ok(())
}
