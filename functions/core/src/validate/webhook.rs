//! A webhook integration's configuration: `url` (https, or an allowed private
//! address) and an optional `secret_key`.

use super::*;

pub(super) fn parse(c: &mut Config<'_>, policy: Policy) -> Option<WebhookConfig> {
    c.only(IntegrationType::Webhook, &["url", "secret_key"]);
    let url =
        c.required_str("url", MAX_URL)
            .and_then(|raw| match check_webhook_url(&raw, policy) {
                Ok(()) => Some(raw),
                Err(detail) => {
                    c.error("url", detail);
                    None
                }
            });
    let secret_key = c.optional_str("secret_key", MAX_SECRET).map(Secret::new);
    Some(WebhookConfig {
        url: url?,
        secret_key,
        retiring: None,
    })
}

fn check_webhook_url(raw: &str, policy: Policy) -> Result<(), String> {
    let url = Url::parse(raw).map_err(|e| format!("must be an absolute URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if policy.allow_http_webhooks => {}
        "http" => return Err("must use https (this deployment does not allow plain http)".into()),
        other => return Err(format!("must be an http(s) URL, not {other}:")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must have a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "must not carry credentials; use configuration.secret_key to authenticate".into(),
        );
    }
    Ok(())
}
