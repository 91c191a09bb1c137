use serde_json::{json, Value};

use super::*;

const STRICT: Policy = Policy {
    allow_http_webhooks: false,
    allow_plain_stomp: false,
};
const DEV: Policy = Policy {
    allow_http_webhooks: true,
    allow_plain_stomp: true,
};

fn body(data: Value) -> Value {
    json!({ "data": data })
}

fn webhook_body() -> Value {
    body(json!({
        "type": "integration",
        "integration_type": "webhook",
        "name": "Order shipping notification",
        "description": "Send a shipping notification",
        "enabled": true,
        "observes": ["order.fulfilled"],
        "configuration": { "url": "https://example.com/hook", "secret_key": "SOME_SECRET_KEY" }
    }))
}

fn with(mut b: Value, pointer: &str, v: Value) -> Value {
    *b.pointer_mut(pointer).expect("pointer exists") = v;
    b
}

fn with_config(kind: &str, cfg: Value) -> Value {
    let b = with(webhook_body(), "/data/integration_type", json!(kind));
    with(b, "/data/configuration", cfg)
}

/// The pointers of every error, in order.
fn pointers(result: Result<Draft, Vec<FieldError>>) -> Vec<String> {
    result
        .expect_err("expected validation errors")
        .into_iter()
        .map(|e| e.pointer)
        .collect()
}

fn detail_of(result: Result<Draft, Vec<FieldError>>, pointer: &str) -> String {
    result
        .expect_err("expected validation errors")
        .into_iter()
        .find(|e| e.pointer == pointer)
        .unwrap_or_else(|| panic!("no error at {pointer}"))
        .detail
}

#[test]
fn a_complete_webhook_body_is_accepted() {
    let d = parse_create(&webhook_body(), STRICT).expect("valid");
    assert_eq!(d.name, "Order shipping notification");
    assert!(d.enabled);
    assert_eq!(d.observes, vec!["order.fulfilled"]);
    let Target::Webhook(w) = d.target else {
        panic!("webhook")
    };
    assert_eq!(w.url, "https://example.com/hook");
    assert_eq!(
        w.secret_key.map(|s| s.expose().to_owned()),
        Some("SOME_SECRET_KEY".into())
    );
}

#[test]
fn enabled_defaults_to_false_and_description_to_empty() {
    let mut b = webhook_body();
    let data = b["data"].as_object_mut().expect("object");
    data.remove("enabled");
    data.remove("description");
    data.remove("observes");
    let d = parse_create(&b, STRICT).expect("valid");
    assert!(!d.enabled);
    assert_eq!(d.description, "");
    assert!(d.observes.is_empty());
}

#[test]
fn the_body_must_be_an_object_with_a_data_object() {
    assert_eq!(pointers(parse_create(&json!([]), STRICT)), vec![""]);
    assert_eq!(pointers(parse_create(&json!({}), STRICT)), vec!["/data"]);
    assert_eq!(
        pointers(parse_create(&json!({"data": 3}), STRICT)),
        vec!["/data"]
    );
}

#[test]
fn type_must_be_integration() {
    let b = with(webhook_body(), "/data/type", json!("integrations"));
    assert_eq!(pointers(parse_create(&b, STRICT)), vec!["/data/type"]);
    let mut b = webhook_body();
    b["data"].as_object_mut().expect("object").remove("type");
    assert_eq!(pointers(parse_create(&b, STRICT)), vec!["/data/type"]);
}

#[test]
fn every_missing_required_attribute_is_reported_at_once() {
    let b = body(json!({"type": "integration"}));
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec![
            "/data/name",
            "/data/integration_type",
            "/data/configuration"
        ]
    );
}

#[test]
fn name_is_required_non_empty_and_bounded() {
    for bad in [
        json!(""),
        json!("   "),
        json!(7),
        json!(null),
        json!("x".repeat(MAX_NAME + 1)),
    ] {
        let b = with(webhook_body(), "/data/name", bad.clone());
        assert_eq!(
            pointers(parse_create(&b, STRICT)),
            vec!["/data/name"],
            "{bad}"
        );
    }
    let b = with(webhook_body(), "/data/name", json!("x".repeat(MAX_NAME)));
    assert!(parse_create(&b, STRICT).is_ok());
}

#[test]
fn description_is_an_optional_bounded_string() {
    let b = with(
        webhook_body(),
        "/data/description",
        json!("x".repeat(MAX_DESCRIPTION + 1)),
    );
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/description"]
    );
    let b = with(webhook_body(), "/data/description", json!(["x"]));
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/description"]
    );
    let b = with(webhook_body(), "/data/description", Value::Null);
    assert_eq!(parse_create(&b, STRICT).expect("valid").description, "");
}

#[test]
fn enabled_must_be_a_boolean() {
    let b = with(webhook_body(), "/data/enabled", json!("true"));
    assert_eq!(pointers(parse_create(&b, STRICT)), vec!["/data/enabled"]);
}

#[test]
fn observes_accepts_catalog_keys_and_collapses_duplicates() {
    let b = with(
        webhook_body(),
        "/data/observes",
        json!(["order.paid", "cart.updated", "order.paid"]),
    );
    assert_eq!(
        parse_create(&b, STRICT).expect("valid").observes,
        vec!["order.paid", "cart.updated"]
    );
}

#[test]
fn observes_points_at_each_unknown_key() {
    let b = with(
        webhook_body(),
        "/data/observes",
        json!(["order.paid", "order.exploded", 5, "cart.created"]),
    );
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/observes/1", "/data/observes/2", "/data/observes/3"]
    );
    let b = with(webhook_body(), "/data/observes", json!("order.paid"));
    assert_eq!(pointers(parse_create(&b, STRICT)), vec!["/data/observes"]);
}

#[test]
fn an_unknown_integration_type_is_refused() {
    let b = with(webhook_body(), "/data/integration_type", json!("kafka"));
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/integration_type"]
    );
}

#[test]
fn unknown_attributes_are_refused_but_links_and_meta_are_ignored() {
    let mut b = webhook_body();
    b["data"]["observe"] = json!(["order.paid"]);
    b["data"]["a/b"] = json!(1);
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/observe", "/data/a~1b"]
    );
    let mut b = webhook_body();
    b["data"]["links"] = json!({"self": "x"});
    b["data"]["meta"] = json!({});
    b["data"]["id"] = json!("ignored");
    assert!(parse_create(&b, STRICT).is_ok());
}

#[test]
fn configuration_must_be_an_object() {
    let b = with(
        webhook_body(),
        "/data/configuration",
        json!("https://example.com"),
    );
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/configuration"]
    );
}

#[test]
fn webhook_url_must_be_absolute_https() {
    for bad in [
        json!("example.com/hook"),
        json!("/hook"),
        json!("ftp://example.com/hook"),
        json!("http://example.com/hook"),
        json!("https://user:pass@example.com/hook"),
        json!("https://"),
        json!(""),
        json!(42),
    ] {
        let b = with(webhook_body(), "/data/configuration/url", bad.clone());
        assert_eq!(
            pointers(parse_create(&b, STRICT)),
            vec!["/data/configuration/url"],
            "{bad}"
        );
    }
}

#[test]
fn plain_http_webhooks_are_accepted_only_when_the_deployment_allows_them() {
    let b = with(
        webhook_body(),
        "/data/configuration/url",
        json!("http://127.0.0.1:9000/hook"),
    );
    assert!(detail_of(parse_create(&b, STRICT), "/data/configuration/url").contains("https"));
    assert!(parse_create(&b, DEV).is_ok());
}

#[test]
fn webhook_url_is_required_and_the_secret_optional() {
    let b = with_config("webhook", json!({}));
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/configuration/url"]
    );
    let b = with_config("webhook", json!({"url": "https://example.com"}));
    let Target::Webhook(w) = parse_create(&b, STRICT).expect("valid").target else {
        panic!("webhook")
    };
    assert!(w.secret_key.is_none());
    let b = with_config(
        "webhook",
        json!({"url": "https://example.com", "secret_key": ""}),
    );
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/configuration/secret_key"]
    );
}

#[test]
fn unknown_configuration_fields_are_refused() {
    let b = with_config(
        "webhook",
        json!({"url": "https://example.com", "secretkey": "x"}),
    );
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec!["/data/configuration/secretkey"]
    );
}

fn sqs_keys() -> Value {
    json!({
        "url": "https://sqs.eu-west-1.amazonaws.com/123456789/epcc-external-queue",
        "aws_access_key_id": "ASIAJLVYNHUWCPKOPSYQ",
        "aws_secret_access_key": "mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ",
        "region": "eu-west-1"
    })
}

#[test]
fn the_seed_aws_sqs_configuration_is_accepted() {
    let d = parse_create(&with_config("aws_sqs", sqs_keys()), STRICT).expect("valid");
    let Target::AwsSqs(c) = d.target else {
        panic!("sqs")
    };
    assert_eq!(c.region, "eu-west-1");
    assert!(matches!(c.auth, SqsAuth::Keys { .. }));
}

#[test]
fn aws_sqs_accepts_a_role_instead_of_keys() {
    let cfg = json!({
        "url": "https://sqs.us-east-1.amazonaws.com/123456789012/orders.fifo",
        "region": "us-east-1",
        "role_arn": "arn:aws:iam::123456789012:role/herald-delivery",
        "external_id": "store-42"
    });
    let d = parse_create(&with_config("aws_sqs", cfg), STRICT).expect("valid");
    let Target::AwsSqs(c) = d.target else {
        panic!("sqs")
    };
    assert_eq!(
        c.auth,
        SqsAuth::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/herald-delivery".into(),
            external_id: "store-42".into()
        }
    );
}

#[test]
fn aws_sqs_needs_exactly_one_way_to_authenticate() {
    let mut both = sqs_keys();
    both["role_arn"] = json!("arn:aws:iam::123456789012:role/x");
    both["external_id"] = json!("ext-id");
    assert_eq!(
        pointers(parse_create(&with_config("aws_sqs", both), STRICT)),
        vec!["/data/configuration/role_arn"]
    );
    let mut neither = sqs_keys();
    neither
        .as_object_mut()
        .expect("object")
        .remove("aws_access_key_id");
    neither
        .as_object_mut()
        .expect("object")
        .remove("aws_secret_access_key");
    assert_eq!(
        pointers(parse_create(&with_config("aws_sqs", neither), STRICT)),
        vec!["/data/configuration/aws_access_key_id"]
    );
    let mut half = sqs_keys();
    half.as_object_mut()
        .expect("object")
        .remove("aws_secret_access_key");
    assert_eq!(
        pointers(parse_create(&with_config("aws_sqs", half), STRICT)),
        vec!["/data/configuration/aws_secret_access_key"]
    );
    let cfg = json!({
        "url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "region": "us-east-1",
        "role_arn": "arn:aws:iam::123456789012:role/x"
    });
    // Herald issues the external id: a role alone is a whole configuration here (the
    // use case fills the store's id in).
    let d = parse_create(&with_config("aws_sqs", cfg), STRICT).expect("valid");
    let Target::AwsSqs(c) = d.target else {
        panic!("sqs")
    };
    assert_eq!(
        c.auth,
        SqsAuth::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/x".into(),
            external_id: String::new()
        }
    );
    let only_id = json!({
        "url": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "region": "us-east-1",
        "external_id": "herald-0123456789abcdef"
    });
    assert_eq!(
        pointers(parse_create(&with_config("aws_sqs", only_id), STRICT)),
        vec!["/data/configuration/role_arn"]
    );
}

#[test]
fn aws_sqs_checks_url_region_key_and_role_shapes() {
    let cases = [
        (
            "url",
            json!("https://example.com/123/q"),
            "/data/configuration/url",
        ),
        (
            "url",
            json!("http://sqs.eu-west-1.amazonaws.com/123/q"),
            "/data/configuration/url",
        ),
        (
            "url",
            json!("https://sqs.eu-west-1.amazonaws.com/abc/q"),
            "/data/configuration/url",
        ),
        (
            "url",
            json!("https://sqs.eu-west-1.amazonaws.com/123"),
            "/data/configuration/url",
        ),
        (
            "url",
            json!("https://sqs.eu-west-1.amazonaws.com/123/q/extra"),
            "/data/configuration/url",
        ),
        (
            "url",
            json!("https://sqs.eu-west-1.amazonaws.com/123/bad%20name"),
            "/data/configuration/url",
        ),
        ("region", json!("europe"), "/data/configuration/region"),
        ("region", json!("us-east-1"), "/data/configuration/region"),
        (
            "aws_access_key_id",
            json!("short"),
            "/data/configuration/aws_access_key_id",
        ),
        (
            "aws_access_key_id",
            json!("asiajlvynhuwcpkopsyq"),
            "/data/configuration/aws_access_key_id",
        ),
        (
            "aws_secret_access_key",
            json!(""),
            "/data/configuration/aws_secret_access_key",
        ),
    ];
    for (field, value, pointer) in cases {
        let mut cfg = sqs_keys();
        cfg[field] = value.clone();
        assert_eq!(
            pointers(parse_create(&with_config("aws_sqs", cfg), STRICT)),
            vec![pointer],
            "{field}={value}"
        );
    }
}

#[test]
fn sqs_url_region_is_read_from_every_accepted_host_form() {
    assert_eq!(
        sqs_url_region("https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q").expect("ok"),
        Some("cn-north-1".into())
    );
    assert_eq!(
        sqs_url_region("https://eu-west-2.queue.amazonaws.com/123456789012/q").expect("ok"),
        Some("eu-west-2".into())
    );
    assert_eq!(
        sqs_url_region("https://queue.amazonaws.com/123456789012/q").expect("ok"),
        None
    );
}

#[test]
fn role_arns_are_checked() {
    let good = [
        "arn:aws:iam::123456789012:role/x",
        "arn:aws-us-gov:iam::123456789012:role/path/to/x",
    ];
    let bad = [
        "arn:aws:iam::12345:role/x",
        "arn:aws:iam::123456789012:user/x",
        "arn:aws:sqs::123456789012:role/x",
        "arn:aws:iam:us-east-1:123456789012:role/x",
        "arn:aws:iam::123456789012:role/",
        "role/x",
    ];
    for arn in good {
        assert!(aws::is_role_arn(arn), "{arn}");
    }
    for arn in bad {
        assert!(!aws::is_role_arn(arn), "{arn}");
    }
}

#[test]
fn regions_are_recognised() {
    for r in [
        "us-east-1",
        "eu-west-1",
        "us-gov-west-1",
        "cn-north-1",
        "ap-southeast-2",
        "il-central-1",
    ] {
        assert!(is_region(r), "{r}");
    }
    for r in [
        "",
        "us",
        "us-east",
        "US-EAST-1",
        "us-east-x",
        "useast1",
        "u-east-1",
        "us--1",
    ] {
        assert!(!is_region(r), "{r}");
    }
}

fn stomp_cfg() -> Value {
    json!({
        "addresses": ["stomp://useast.api.elasticpath.com"],
        "destination": "/queue/queue1",
        "username": "user1",
        "password": "*******d123"
    })
}

#[test]
fn the_seed_stomp_configuration_is_accepted() {
    let d = parse_create(&with_config("stomp", stomp_cfg()), DEV).expect("valid");
    let Target::Stomp(c) = d.target else {
        panic!("stomp")
    };
    assert_eq!(c.addresses, vec!["stomp://useast.api.elasticpath.com"]);
    assert_eq!(c.password.expose(), "*******d123");
}

#[test]
fn stomp_accepts_every_documented_scheme_with_or_without_a_port() {
    let mut cfg = stomp_cfg();
    cfg["addresses"] = json!([
        "stomp://a.example.com",
        "stomp+ssl://b-1234.mq.us-west-2.amazonaws.com:61614",
        "ssl://c.example.com:61617",
        "tcp://10.0.0.1:61613",
        "stomp://[::1]:61613"
    ]);
    assert!(parse_create(&with_config("stomp", cfg), DEV).is_ok());
}

#[test]
fn plain_stomp_addresses_are_refused_where_the_deployment_allows_only_tls() {
    let mut cfg = stomp_cfg();
    cfg["addresses"] = json!([
        "stomp+ssl://b-1234.mq.us-west-2.amazonaws.com:61614",
        "stomp://a.example.com",
        "ssl://c.example.com:61617",
        "tcp://d.example.com:61613"
    ]);
    let errors = parse_create(&with_config("stomp", cfg.clone()), STRICT).expect_err("refused");
    let detail = "must use TLS (stomp+ssl:// or ssl://): this deployment does not allow plain STOMP, which would send the broker password in clear text";
    assert_eq!(
        errors,
        vec![
            FieldError::new("/data/configuration/addresses/1", detail),
            FieldError::new("/data/configuration/addresses/3", detail),
        ]
    );
    assert!(parse_create(&with_config("stomp", cfg.clone()), DEV).is_ok());
    // What is stored already stays readable.
    assert!(parse_stored_target(IntegrationType::Stomp, &cfg).is_ok());
}

#[test]
fn stomp_addresses_point_at_each_bad_entry() {
    let mut cfg = stomp_cfg();
    cfg["addresses"] = json!([
        "stomp://ok.example.com",
        "http://broker.example.com",
        "stomp://",
        "stomp://user:pw@host",
        "stomp://host/path",
        7
    ]);
    assert_eq!(
        pointers(parse_create(&with_config("stomp", cfg), DEV)),
        vec![
            "/data/configuration/addresses/1",
            "/data/configuration/addresses/2",
            "/data/configuration/addresses/3",
            "/data/configuration/addresses/4",
            "/data/configuration/addresses/5"
        ]
    );
}

#[test]
fn stomp_needs_addresses_destination_username_and_password() {
    let b = with_config("stomp", json!({}));
    assert_eq!(
        pointers(parse_create(&b, STRICT)),
        vec![
            "/data/configuration/addresses",
            "/data/configuration/destination",
            "/data/configuration/username",
            "/data/configuration/password"
        ]
    );
    let mut cfg = stomp_cfg();
    cfg["addresses"] = json!([]);
    cfg["destination"] = json!("");
    assert_eq!(
        pointers(parse_create(&with_config("stomp", cfg), STRICT)),
        vec![
            "/data/configuration/addresses",
            "/data/configuration/destination"
        ]
    );
    let mut cfg = stomp_cfg();
    cfg["addresses"] = json!(vec!["stomp://a"; MAX_ADDRESSES + 1]);
    cfg["destination"] = json!("/queue/a\nb");
    assert_eq!(
        pointers(parse_create(&with_config("stomp", cfg), STRICT)),
        vec![
            "/data/configuration/addresses",
            "/data/configuration/destination"
        ]
    );
}

fn stored_webhook() -> Draft {
    parse_create(&webhook_body(), STRICT).expect("valid")
}

#[test]
fn an_update_keeps_every_omitted_attribute() {
    let current = stored_webhook();
    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "name": "Renamed"})),
        STRICT,
    )
    .expect("valid");
    assert_eq!(next.name, "Renamed");
    assert_eq!(next.description, current.description);
    assert_eq!(next.enabled, current.enabled);
    assert_eq!(next.observes, current.observes);
    assert_eq!(next.target, current.target);
}

#[test]
fn an_update_that_sends_the_masked_secret_back_keeps_the_secret() {
    let current = stored_webhook();
    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": {
            "url": "https://example.com/hook", "secret_key": "***********_KEY"
        }})),
        STRICT,
    )
    .expect("valid");
    let Target::Webhook(w) = next.target else {
        panic!("webhook")
    };
    assert_eq!(w.url, "https://example.com/hook");
    assert_eq!(w.secret_key.expect("kept").expose(), "SOME_SECRET_KEY");
}

#[test]
fn an_update_that_omits_the_secret_keeps_it_and_a_new_value_replaces_it() {
    let current = stored_webhook();
    let kept = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": {}})),
        STRICT,
    )
    .expect("valid");
    let Target::Webhook(w) = kept.target else {
        panic!("webhook")
    };
    assert_eq!(w.secret_key.expect("kept").expose(), "SOME_SECRET_KEY");

    let replaced = apply_update(
        &current,
        &body(
            json!({"type": "integration", "configuration": {"secret_key": "a-brand-new-secret"}}),
        ),
        STRICT,
    )
    .expect("valid");
    let Target::Webhook(w) = replaced.target else {
        panic!("webhook")
    };
    assert_eq!(w.secret_key.expect("set").expose(), "a-brand-new-secret");
    assert_eq!(w.url, "https://example.com/hook");
}

#[test]
fn a_new_webhook_url_needs_the_secret_again_in_clear() {
    let current = stored_webhook();
    for sent in [
        json!({"url": "https://attacker.example/x"}),
        json!({"url": "https://attacker.example/x", "secret_key": "***********_KEY"}),
    ] {
        let result = apply_update(
            &current,
            &body(json!({"type": "integration", "configuration": sent})),
            STRICT,
        );
        let detail = detail_of(result.clone(), "/data/configuration/secret_key");
        assert!(detail.contains("url"), "{detail}");
        assert_eq!(pointers(result), vec!["/data/configuration/secret_key"]);
    }
    // The secret sent again (the same one, or a new one) moves it; so does removing it.
    for secret in [json!("SOME_SECRET_KEY"), json!("a-new-secret"), Value::Null] {
        let next = apply_update(
            &current,
            &body(json!({"type": "integration", "configuration": {
                "url": "https://new.example/x", "secret_key": secret.clone()
            }})),
            STRICT,
        )
        .expect("valid");
        let Target::Webhook(w) = next.target else {
            panic!("webhook")
        };
        assert_eq!(w.url, "https://new.example/x");
        assert_eq!(
            w.secret_key.map(|s| s.expose().to_owned()),
            secret.as_str().map(str::to_owned)
        );
    }
}

#[test]
fn a_webhook_without_a_secret_moves_freely() {
    let current = apply_update(
        &stored_webhook(),
        &body(json!({"type": "integration", "configuration": {"secret_key": null}})),
        STRICT,
    )
    .expect("valid");
    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": {"url": "https://new.example/x"}})),
        STRICT,
    )
    .expect("valid");
    assert_eq!(
        next.target.configuration(true)["url"],
        json!("https://new.example/x")
    );
}

#[test]
fn new_stomp_brokers_or_virtual_host_need_the_password_again() {
    let current = parse_create(&with_config("stomp", stomp_cfg()), DEV).expect("valid");
    for moved in [
        json!({"addresses": ["stomp+ssl://attacker.example:61614"]}),
        json!({"host": "other-vhost"}),
    ] {
        assert_eq!(
            pointers(apply_update(
                &current,
                &body(json!({"type": "integration", "configuration": moved})),
                DEV,
            )),
            vec!["/data/configuration/password"],
            "{moved}"
        );
    }
    // The same brokers sent back, a new destination queue or user: the password stays.
    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": {
            "addresses": ["stomp://useast.api.elasticpath.com"], "destination": "/queue/2"
        }})),
        DEV,
    )
    .expect("valid");
    let Target::Stomp(c) = next.target else {
        panic!("stomp")
    };
    assert_eq!(c.password.expose(), "*******d123");
    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": {
            "addresses": ["stomp+ssl://new.example:61614"], "password": "new-password"
        }})),
        DEV,
    )
    .expect("valid");
    let Target::Stomp(c) = next.target else {
        panic!("stomp")
    };
    assert_eq!(c.password.expose(), "new-password");
}

#[test]
fn a_new_sqs_queue_or_region_needs_both_keys_again() {
    let current = parse_create(&with_config("aws_sqs", sqs_keys()), STRICT).expect("valid");
    let moved = json!({"url": "https://sqs.eu-west-1.amazonaws.com/999999999999/elsewhere"});
    assert_eq!(
        pointers(apply_update(
            &current,
            &body(json!({"type": "integration", "configuration": moved})),
            STRICT,
        )),
        vec![
            "/data/configuration/aws_access_key_id",
            "/data/configuration/aws_secret_access_key"
        ]
    );
    let mut resent = sqs_keys();
    resent["url"] = json!("https://sqs.eu-west-1.amazonaws.com/999999999999/elsewhere");
    assert!(apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": resent})),
        STRICT,
    )
    .is_ok());
}

#[test]
fn an_update_can_remove_the_optional_secret_with_null() {
    let next = apply_update(
        &stored_webhook(),
        &body(json!({"type": "integration", "configuration": {"secret_key": null}})),
        STRICT,
    )
    .expect("valid");
    let Target::Webhook(w) = next.target else {
        panic!("webhook")
    };
    assert!(w.secret_key.is_none());
}

#[test]
fn an_update_cannot_remove_a_required_field() {
    let errors = apply_update(
        &stored_webhook(),
        &body(json!({"type": "integration", "configuration": {"url": null}})),
        STRICT,
    )
    .expect_err("invalid");
    assert_eq!(errors[0].pointer, "/data/configuration/url");
}

#[test]
fn changing_integration_type_needs_a_full_configuration_for_the_new_type() {
    let current = stored_webhook();
    let errors = apply_update(
        &current,
        &body(json!({"type": "integration", "integration_type": "stomp"})),
        STRICT,
    )
    .expect_err("configuration required");
    assert_eq!(errors[0].pointer, "/data/configuration");

    // The webhook's fields are not merged into the new type's configuration.
    let errors = apply_update(
        &current,
        &body(json!({"type": "integration", "integration_type": "stomp",
                     "configuration": {"destination": "/queue/x"}})),
        STRICT,
    )
    .expect_err("incomplete");
    let ptrs: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        ptrs,
        vec![
            "/data/configuration/addresses",
            "/data/configuration/username",
            "/data/configuration/password"
        ]
    );

    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "integration_type": "stomp", "configuration": stomp_cfg()})),
        DEV,
    )
    .expect("valid");
    assert_eq!(next.target.kind(), IntegrationType::Stomp);
}

#[test]
fn an_update_is_validated_like_a_create() {
    let errors = apply_update(
        &stored_webhook(),
        &body(json!({"type": "integration", "name": "", "observes": ["nope.nope"], "enabled": 1})),
        STRICT,
    )
    .expect_err("invalid");
    let ptrs: Vec<_> = errors.iter().map(|e| e.pointer.as_str()).collect();
    assert_eq!(
        ptrs,
        vec!["/data/name", "/data/enabled", "/data/observes/0"]
    );
}

#[test]
fn switching_sqs_from_keys_to_a_role_needs_the_keys_removed() {
    let current = parse_create(&with_config("aws_sqs", sqs_keys()), STRICT).expect("valid");
    let role = json!({"role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "ext-1"});
    let errors = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": role})),
        STRICT,
    )
    .expect_err("both");
    assert!(errors[0].detail.contains("null"), "{}", errors[0].detail);
    let role = json!({"role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "ext-1",
                      "aws_access_key_id": null, "aws_secret_access_key": null});
    let next = apply_update(
        &current,
        &body(json!({"type": "integration", "configuration": role})),
        STRICT,
    )
    .expect("valid");
    let Target::AwsSqs(c) = next.target else {
        panic!("sqs")
    };
    assert!(matches!(c.auth, SqsAuth::AssumeRole { .. }));
}

#[test]
fn stored_configurations_read_back_even_when_the_policy_has_tightened() {
    let stored = json!({"url": "http://127.0.0.1:9000/hook"});
    assert!(parse_stored_target(IntegrationType::Webhook, &stored).is_ok());
    assert!(parse_stored_target(IntegrationType::Webhook, &json!("x")).is_err());
}

#[test]
fn pointer_escaping_follows_rfc_6901() {
    assert_eq!(escape_pointer("a/b~c"), "a~1b~0c");
}

#[test]
fn huge_values_are_shortened_in_error_details() {
    let key = "z".repeat(10_000);
    let b = with(webhook_body(), "/data/observes", json!([key]));
    assert!(detail_of(parse_create(&b, STRICT), "/data/observes/0").len() < 200);
}

fn eventbridge_keys() -> Value {
    json!({
        "event_bus_arn": "arn:aws:events:eu-west-1:123456789012:event-bus/orders",
        "region": "eu-west-1",
        "aws_access_key_id": "ASIAJLVYNHUWCPKOPSYQ",
        "aws_secret_access_key": "mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ"
    })
}

fn sns_keys() -> Value {
    json!({
        "topic_arn": "arn:aws:sns:eu-west-1:123456789012:orders",
        "region": "eu-west-1",
        "aws_access_key_id": "ASIAJLVYNHUWCPKOPSYQ",
        "aws_secret_access_key": "mgJteE7dZgSLC2eo2vKsAUWRSnchrWzCRnoDpUSJ"
    })
}

#[test]
fn an_aws_eventbridge_configuration_is_accepted_and_shown_with_its_keys_masked() {
    // GIVEN an event bus with static keys and a detail-type prefix
    let mut cfg = eventbridge_keys();
    cfg["detail_type_prefix"] = json!("acme.");
    // WHEN it is validated
    let d = parse_create(&with_config("aws_eventbridge", cfg), STRICT).expect("valid");
    // THEN it is an EventBridge target whose API form masks both keys
    assert_eq!(d.target.kind().as_str(), "aws_eventbridge");
    assert_eq!(
        d.target.configuration(false),
        json!({
            "event_bus_arn": "arn:aws:events:eu-west-1:123456789012:event-bus/orders",
            "region": "eu-west-1",
            "detail_type_prefix": "acme.",
            "aws_access_key_id": "****************PSYQ",
            "aws_secret_access_key": "************************************pUSJ"
        })
    );
}

#[test]
fn an_aws_sns_configuration_with_a_role_is_accepted_with_the_external_id_left_to_herald() {
    let cfg = json!({
        "topic_arn": "arn:aws:sns:us-east-1:123456789012:orders.fifo",
        "region": "us-east-1",
        "role_arn": "arn:aws:iam::123456789012:role/herald-delivery"
    });
    let d = parse_create(&with_config("aws_sns", cfg), STRICT).expect("valid");
    assert_eq!(d.target.kind().as_str(), "aws_sns");
    assert_eq!(
        d.target.configuration(false),
        json!({
            "topic_arn": "arn:aws:sns:us-east-1:123456789012:orders.fifo",
            "region": "us-east-1",
            "role_arn": "arn:aws:iam::123456789012:role/herald-delivery",
            "external_id": ""
        })
    );
}

#[test]
fn aws_eventbridge_checks_the_bus_arn_region_prefix_and_credentials_each_with_a_pointer() {
    let cases = [
        (
            "event_bus_arn",
            json!("orders"),
            "/data/configuration/event_bus_arn",
        ),
        (
            "event_bus_arn",
            json!("arn:aws:sns:eu-west-1:123456789012:orders"),
            "/data/configuration/event_bus_arn",
        ),
        (
            "event_bus_arn",
            json!("arn:aws:events:eu-west-1:1234:event-bus/orders"),
            "/data/configuration/event_bus_arn",
        ),
        (
            "event_bus_arn",
            json!("arn:aws:events:eu-west-1:123456789012:rule/orders"),
            "/data/configuration/event_bus_arn",
        ),
        (
            "event_bus_arn",
            json!("arn:aws:events:eu-west-1:123456789012:event-bus/bad name"),
            "/data/configuration/event_bus_arn",
        ),
        ("region", json!("us-east-1"), "/data/configuration/region"),
        ("region", json!("europe"), "/data/configuration/region"),
        (
            "detail_type_prefix",
            json!(""),
            "/data/configuration/detail_type_prefix",
        ),
        (
            "detail_type_prefix",
            json!("x".repeat(65)),
            "/data/configuration/detail_type_prefix",
        ),
        (
            "detail_type_prefix",
            json!(7),
            "/data/configuration/detail_type_prefix",
        ),
        (
            "aws_access_key_id",
            json!("short"),
            "/data/configuration/aws_access_key_id",
        ),
        (
            "url",
            json!("https://example.com"),
            "/data/configuration/url",
        ),
    ];
    for (field, value, pointer) in cases {
        let mut cfg = eventbridge_keys();
        cfg[field] = value.clone();
        assert_eq!(
            pointers(parse_create(&with_config("aws_eventbridge", cfg), STRICT)),
            vec![pointer],
            "{field}={value}"
        );
    }
    let mut cfg = eventbridge_keys();
    cfg["region"] = json!("us-east-1");
    assert_eq!(
        detail_of(
            parse_create(&with_config("aws_eventbridge", cfg), STRICT),
            "/data/configuration/region"
        ),
        "does not match the event bus ARN's region (eu-west-1)"
    );
    let mut missing = eventbridge_keys();
    missing
        .as_object_mut()
        .expect("object")
        .remove("event_bus_arn");
    assert_eq!(
        detail_of(
            parse_create(&with_config("aws_eventbridge", missing), STRICT),
            "/data/configuration/event_bus_arn"
        ),
        "is required"
    );
}

#[test]
fn aws_sns_checks_the_topic_arn_region_and_credentials_each_with_a_pointer() {
    let cases = [
        (
            "topic_arn",
            json!("orders"),
            "/data/configuration/topic_arn",
        ),
        (
            "topic_arn",
            json!("arn:aws:sqs:eu-west-1:123456789012:orders"),
            "/data/configuration/topic_arn",
        ),
        (
            "topic_arn",
            json!("arn:aws:sns:eu-west-1:123456789012:orders:sub-id"),
            "/data/configuration/topic_arn",
        ),
        (
            "topic_arn",
            json!("arn:aws:sns:eu-west-1:123456789012:"),
            "/data/configuration/topic_arn",
        ),
        (
            "topic_arn",
            json!(format!(
                "arn:aws:sns:eu-west-1:123456789012:{}",
                "t".repeat(257)
            )),
            "/data/configuration/topic_arn",
        ),
        ("region", json!("us-east-1"), "/data/configuration/region"),
        (
            "aws_secret_access_key",
            json!(""),
            "/data/configuration/aws_secret_access_key",
        ),
        (
            "role_arn",
            json!("arn:aws:iam::123456789012:role/x"),
            "/data/configuration/role_arn",
        ),
        (
            "detail_type_prefix",
            json!("acme."),
            "/data/configuration/detail_type_prefix",
        ),
    ];
    for (field, value, pointer) in cases {
        let mut cfg = sns_keys();
        cfg[field] = value.clone();
        assert_eq!(
            pointers(parse_create(&with_config("aws_sns", cfg), STRICT)),
            vec![pointer],
            "{field}={value}"
        );
    }
}

#[test]
fn a_new_bus_or_topic_needs_both_keys_again() {
    for (kind, cfg, field, elsewhere) in [
        (
            "aws_eventbridge",
            eventbridge_keys(),
            "event_bus_arn",
            "arn:aws:events:eu-west-1:999999999999:event-bus/elsewhere",
        ),
        (
            "aws_sns",
            sns_keys(),
            "topic_arn",
            "arn:aws:sns:eu-west-1:999999999999:elsewhere",
        ),
    ] {
        let current = parse_create(&with_config(kind, cfg), STRICT).expect("valid");
        assert_eq!(
            pointers(apply_update(
                &current,
                &body(json!({"type": "integration", "configuration": {field: elsewhere}})),
                STRICT,
            )),
            vec![
                "/data/configuration/aws_access_key_id",
                "/data/configuration/aws_secret_access_key"
            ],
            "{kind}"
        );
    }
}
