//! Invariants of `template.yaml` that the linters do not check.

use serde_yaml_ng::Value;

fn template() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../template.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("template.yaml")).expect("YAML")
}

/// Every string inside a value, tags (`!Ref`, `!Sub`) included.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            strings(k, out);
            strings(v, out);
        }),
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

#[test]
fn every_parameter_has_a_description_and_a_default() {
    let t = template();
    for (name, p) in t["Parameters"].as_mapping().expect("parameters") {
        assert!(p["Description"].is_string(), "{name:?} has no Description");
        assert!(!p["Default"].is_null(), "{name:?} has no Default");
    }
}

#[test]
fn no_policy_grants_a_wildcard_action_or_resource() {
    let t = template();
    for (name, r) in t["Resources"].as_mapping().expect("resources") {
        let Some(policies) = r["Properties"]["Policies"].as_sequence() else {
            continue;
        };
        for policy in policies {
            for statement in policy["Statement"].as_sequence().expect("statements") {
                let mut actions = Vec::new();
                strings(&statement["Action"], &mut actions);
                assert!(
                    !actions.is_empty(),
                    "{name:?} has a statement without actions"
                );
                for a in &actions {
                    assert!(!a.contains('*'), "{name:?} grants wildcard action {a}");
                }
                let mut resources = Vec::new();
                strings(&statement["Resource"], &mut resources);
                assert!(
                    !resources.is_empty(),
                    "{name:?} has a statement without resources"
                );
                assert!(
                    !resources.iter().any(|r| r == "*"),
                    "{name:?} grants Resource *"
                );
            }
        }
    }
}

#[test]
fn the_table_has_point_in_time_recovery_encryption_and_on_demand_billing() {
    let t = template();
    let table = &t["Resources"]["Table"]["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    assert_eq!(table["SSESpecification"]["SSEEnabled"], true);
    assert_eq!(table["SSESpecification"]["SSEType"], "KMS");
}

/// The KMS actions a function's policies grant, with the resources they name.
fn kms_grants(t: &Value, function: &str) -> Vec<(String, Vec<String>)> {
    grants(t, function)
        .into_iter()
        .filter(|(a, _)| a.starts_with("kms:"))
        .collect()
}

/// Every action a function's policies grant, with the resources they name.
fn grants(t: &Value, function: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for policy in resource(t, function)["Properties"]["Policies"]
        .as_sequence()
        .expect("policies")
    {
        for st in policy["Statement"].as_sequence().expect("statements") {
            let mut actions = Vec::new();
            strings(&st["Action"], &mut actions);
            let mut resources = Vec::new();
            strings(&st["Resource"], &mut resources);
            for a in actions {
                out.push((a, resources.clone()));
            }
        }
    }
    out
}

#[test]
fn secrets_are_sealed_by_the_api_opened_by_the_fanout_sealed_again_by_the_sweeper_and_never_seen_by_ingest(
) {
    let t = template();
    let key = resource(&t, "SecretsKey");
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    assert_eq!(
        key["DeletionPolicy"], "Retain",
        "losing the key loses every secret"
    );
    // The key policy grants each role its use (the roles' own policies grant none).
    let granted = |role: &str| -> Vec<String> {
        let mut out: Vec<String> = key_statements(&t)
            .into_iter()
            .filter(|(_, principals, _, _)| principals == &[format!("{role}.Arn")])
            .flat_map(|(_, _, actions, _)| actions)
            .collect();
        out.sort();
        out
    };
    assert_eq!(
        granted("ApiFunctionRole"),
        ["kms:Decrypt", "kms:GenerateDataKey"]
    );
    assert_eq!(granted("FanoutFunctionRole"), ["kms:Decrypt"]);
    assert_eq!(
        granted("SweeperFunctionRole"),
        ["kms:Decrypt", "kms:GenerateDataKey"]
    );
    assert!(granted("IngestFunctionRole").is_empty());
    for function in [
        "ApiFunction",
        "IngestFunction",
        "FanoutFunction",
        "SweeperFunction",
    ] {
        assert!(kms_grants(&t, function).is_empty(), "{function}");
    }
    for function in ["ApiFunction", "FanoutFunction", "SweeperFunction"] {
        let env = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        let mut named = Vec::new();
        strings(&env["HERALD_KMS_KEY_ID"], &mut named);
        assert_eq!(named, ["SecretsKey.Arn"], "{function} names the key");
    }
    let ingest_env = &resource(&t, "IngestFunction")["Properties"]["Environment"]["Variables"];
    assert!(ingest_env["HERALD_KMS_KEY_ID"].is_null());
}

/// The portal's page and files: static, the same for everyone, so they are served
/// without an authorizer (the API calls the page makes carry the bearer token); and
/// the `dataref` of a queue message, whose token is the capability.
const OPEN_ROUTES: [&str; 3] = [
    "GET /portal",
    "GET /portal/{asset}",
    "GET /v2/event-data/{token}",
];

#[test]
fn every_route_but_the_portals_static_files_requires_an_authorizer() {
    let t = template();
    let mut routes = 0;
    let mut open = Vec::new();
    for (name, r) in t["Resources"].as_mapping().expect("resources") {
        if r["Type"] == "AWS::ApiGatewayV2::Route" {
            routes += 1;
            let auth = &r["Properties"]["AuthorizationType"];
            let mut values = Vec::new();
            strings(auth, &mut values);
            assert!(!values.is_empty(), "{name:?} has no AuthorizationType");
            if values == ["NONE"] {
                open.push(
                    r["Properties"]["RouteKey"]
                        .as_str()
                        .expect("key")
                        .to_owned(),
                );
                let mut target = Vec::new();
                strings(&r["Properties"]["Target"], &mut target);
                assert_eq!(target, ["integrations/${ApiIntegration}"], "{name:?}");
            } else {
                assert!(!values.iter().any(|v| v == "NONE"), "{name:?} is open");
            }
        }
    }
    assert!(routes > OPEN_ROUTES.len());
    open.sort();
    assert_eq!(open, OPEN_ROUTES);
}

#[test]
fn api_gateway_may_invoke_the_api_function_for_the_portal_and_v2_only() {
    let t = template();
    let mut sources = Vec::new();
    for (_, r) in t["Resources"].as_mapping().expect("resources") {
        if r["Type"] == "AWS::Lambda::Permission" {
            let mut function = Vec::new();
            strings(&r["Properties"]["FunctionName"], &mut function);
            if function == ["ApiFunction"] {
                let mut arn = Vec::new();
                strings(&r["Properties"]["SourceArn"], &mut arn);
                sources.extend(arn);
            }
        }
    }
    sources.sort();
    let base = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}";
    assert_eq!(
        sources,
        [format!("{base}/*/*/v2/*"), format!("{base}/*/GET/portal*")]
    );
}

#[test]
fn the_portal_signs_in_at_the_stacks_issuer_with_its_own_client_id_empty_by_default() {
    let t = template();
    let parameter = &t["Parameters"]["PortalClientId"];
    assert_eq!(parameter["Type"], "String");
    assert_eq!(parameter["Default"], "");
    let env = &resource(&t, "ApiFunction")["Properties"]["Environment"]["Variables"];
    for (variable, parameter) in [
        ("HERALD_PORTAL_CLIENT_ID", "PortalClientId"),
        ("HERALD_JWT_ISSUER", "JwtIssuer"),
    ] {
        let mut named = Vec::new();
        strings(&env[variable], &mut named);
        assert_eq!(named, [parameter], "{variable}");
    }
}

fn resource<'a>(t: &'a Value, name: &str) -> &'a Value {
    let r = &t["Resources"][name];
    assert!(r.is_mapping(), "no resource {name}");
    r
}

fn number(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a number: {v:?}"))
}

#[test]
fn every_function_is_built_from_its_own_binary() {
    let t = template();
    for (name, binary) in [
        ("ApiFunction", "api"),
        ("IngestFunction", "ingest"),
        ("FanoutFunction", "fanout"),
        ("SweeperFunction", "sweeper"),
    ] {
        let f = resource(&t, name);
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}");
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], binary, "{name}");
        assert_eq!(f["Properties"]["CodeUri"], ".", "{name}");
        assert_eq!(f["Properties"]["Runtime"], "provided.al2023", "{name}");
    }
}

#[test]
fn the_fanout_reports_batch_item_failures_from_the_internal_queue() {
    let t = template();
    let mappings: Vec<_> = t["Resources"]
        .as_mapping()
        .expect("resources")
        .values()
        .filter(|r| r["Type"] == "AWS::Lambda::EventSourceMapping")
        .collect();
    assert_eq!(mappings.len(), 1);
    let props = &mappings[0]["Properties"];
    let types = props["FunctionResponseTypes"]
        .as_sequence()
        .expect("FunctionResponseTypes");
    assert!(types.iter().any(|v| v == "ReportBatchItemFailures"));
    let mut source = Vec::new();
    strings(&props["EventSourceArn"], &mut source);
    assert!(
        source.iter().any(|q| q.starts_with("InternalQueue")),
        "{source:?}"
    );
    let mut function = Vec::new();
    strings(&props["FunctionName"], &mut function);
    assert_eq!(function, vec!["FanoutFunction"]);
    assert!(!props["ScalingConfig"]["MaximumConcurrency"].is_null());
    // No SAM SQS event: it would attach a managed policy with Resource "*".
    assert!(resource(&t, "FanoutFunction")["Properties"]["Events"].is_null());
}

#[test]
fn a_fanout_batch_over_ten_records_without_a_batching_window_is_refused_before_deploying() {
    // Lambda refuses such an SQS event source mapping, after the stack has created
    // everything before it; the template's rule refuses the parameters up front.
    let t = template();
    let rule = &t["Rules"]["BatchesOverTenNeedABatchingWindow"];
    let mut condition = Vec::new();
    strings(&rule["RuleCondition"], &mut condition);
    assert_eq!(condition, vec!["FanoutBatchingWindowSeconds", "0"]);
    let assertion = &rule["Assertions"][0];
    let Value::Tagged(contains) = &assertion["Assert"] else {
        panic!("the assertion is not !Contains: {assertion:?}");
    };
    assert_eq!(contains.tag, "Contains");
    let allowed: Vec<String> = contains.value[0]
        .as_sequence()
        .expect("the allowed sizes")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let params = &t["Parameters"]["FanoutBatchSize"];
    let sizes: Vec<String> = (number(&params["MinValue"])..=10)
        .map(|n| n.to_string())
        .collect();
    assert_eq!(allowed, sizes, "every size Lambda takes without a window");
    let mut subject = Vec::new();
    strings(&contains.value[1], &mut subject);
    assert_eq!(subject, vec!["FanoutBatchSize"]);
    assert!(number(&params["MaxValue"]) > 10);
    assert!(assertion["AssertDescription"]
        .as_str()
        .is_some_and(|d| d.contains("FanoutBatchingWindowSeconds")));
}

#[test]
fn the_queue_visibility_is_at_least_six_times_the_fanout_timeout() {
    let t = template();
    let timeout = number(&resource(&t, "FanoutFunction")["Properties"]["Timeout"]);
    let visibility = number(&resource(&t, "InternalQueue")["Properties"]["VisibilityTimeout"]);
    assert!(
        visibility >= 6 * timeout,
        "visibility {visibility} < 6 x {timeout}"
    );
}

#[test]
fn the_fanout_outlasts_the_longest_webhook() {
    let t = template();
    let timeout = number(&resource(&t, "FanoutFunction")["Properties"]["Timeout"]);
    let webhook_max = number(&t["Parameters"]["WebhookTimeoutSeconds"]["MaxValue"]);
    assert!(
        timeout as f64
            >= webhook_max as f64 + herald_core::fanout::DEADLINE_MARGIN.as_secs_f64() + 5.0,
        "fan-out timeout {timeout} s leaves no room after a {webhook_max} s webhook"
    );
}

#[test]
fn every_queue_has_a_dlq_and_max_receive_count_leaves_slack_for_receives_that_make_no_attempt() {
    // Each retry is a new message, so the receive count is not the attempt number: a
    // message carries one attempt, and maxReceiveCount is the slack for receives
    // that do not finish (crashed, throttled or cut invocations), AWS's advised 5
    // or more, and more than the schedule's attempts (it used to be that).
    let t = template();
    let receives = u64::from(herald_core::retry::MAX_RECEIVES);
    assert!(receives >= 5);
    assert!(receives > u64::from(herald_core::retry::RetryPolicy::default().max_attempts()));
    let queues: Vec<_> = t["Resources"]
        .as_mapping()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::SQS::Queue")
        .map(|(n, r)| (n.as_str().expect("name").to_owned(), r.clone()))
        .collect();
    // Queues nothing consumes automatically: a DLQ, or a function's failure destination.
    let mut destinations = Vec::new();
    strings(
        &resource(&t, "IngestFunction")["Properties"]["EventInvokeConfig"]["DestinationConfig"],
        &mut destinations,
    );
    let terminal: Vec<String> = destinations
        .iter()
        .filter_map(|d| d.strip_suffix(".Arn").map(str::to_owned))
        .collect();
    assert_eq!(terminal, ["IngestFailureQueue"]);
    let dlqs: Vec<_> = queues
        .iter()
        .filter_map(|(_, r)| {
            let mut target = Vec::new();
            strings(
                &r["Properties"]["RedrivePolicy"]["deadLetterTargetArn"],
                &mut target,
            );
            target
                .first()
                .map(|t| t.split('.').next().unwrap_or_default().to_owned())
        })
        .collect();
    for (name, r) in &queues {
        let redrive = &r["Properties"]["RedrivePolicy"];
        assert_eq!(
            r["Properties"]["SqsManagedSseEnabled"], true,
            "{name} is not encrypted"
        );
        if dlqs.contains(name) || terminal.contains(name) {
            assert!(
                redrive.is_null(),
                "{name} is a DLQ or a failure destination and has no DLQ of its own"
            );
            continue;
        }
        assert!(!redrive.is_null(), "{name} has no DLQ");
        assert_eq!(number(&redrive["maxReceiveCount"]), receives, "{name}");
        assert_eq!(
            r["Properties"]["SqsManagedSseEnabled"], true,
            "{name} is not encrypted"
        );
    }
    assert!(!dlqs.is_empty());
}

#[test]
fn events_are_iam_authorized_and_go_to_the_ingest_function() {
    let t = template();
    let route = resource(&t, "EventsRoute");
    assert_eq!(route["Properties"]["RouteKey"], "POST /v2/events");
    assert_eq!(route["Properties"]["AuthorizationType"], "AWS_IAM");
    let mut target = Vec::new();
    strings(&route["Properties"]["Target"], &mut target);
    assert!(
        target.iter().any(|t| t.contains("IngestIntegration")),
        "{target:?}"
    );
}

#[test]
fn the_iam_store_access_mapping_reaches_the_api_and_ingest_functions_and_defaults_to_none() {
    let t = template();
    let parameter = &t["Parameters"]["IamStoreAccess"];
    assert_eq!(parameter["Type"], "String");
    assert_eq!(parameter["Default"], "");
    for function in ["ApiFunction", "IngestFunction"] {
        let env = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        let mut named = Vec::new();
        strings(&env["HERALD_IAM_STORE_ACCESS"], &mut named);
        assert_eq!(named, ["IamStoreAccess"], "{function}");
    }
}

#[test]
fn no_function_holds_another_functions_permissions() {
    let t = template();
    let actions = |name: &str| {
        let mut out = Vec::new();
        for policy in resource(&t, name)["Properties"]["Policies"]
            .as_sequence()
            .expect("policies")
        {
            for st in policy["Statement"].as_sequence().expect("statements") {
                strings(&st["Action"], &mut out);
            }
        }
        out
    };
    let ingest = actions("IngestFunction");
    let fanout = actions("FanoutFunction");
    // The api touches queues only to replay and to fire integration events: it reads
    // the DLQ and sends to the internal queue, never receives from it.
    for (action, resources) in grants(&t, "ApiFunction") {
        if !action.starts_with("sqs:") {
            continue;
        }
        let expected = if action == "sqs:SendMessage" {
            "InternalQueue.Arn"
        } else {
            "DeadLetterQueue.Arn"
        };
        assert_eq!(resources, [expected], "{action}");
    }
    // Ingest reads integrations and takes claims (conditional UpdateItems): no
    // other write to the table, and no hand on received messages.
    let mut table_actions: Vec<&String> = ingest
        .iter()
        .filter(|a| a.starts_with("dynamodb:"))
        .collect();
    table_actions.sort();
    assert_eq!(table_actions, ["dynamodb:Query", "dynamodb:UpdateItem"]);
    assert!(!ingest.iter().any(|a| a == "sqs:ChangeMessageVisibility"));
    assert!(!fanout
        .iter()
        .any(|a| a == "dynamodb:PutItem" || a == "dynamodb:DeleteItem"));
    // The fan-out sends only retries (to the internal queue) and dead letters.
    let sends: Vec<Vec<String>> = grants(&t, "FanoutFunction")
        .into_iter()
        .filter(|(a, _)| a == "sqs:SendMessage")
        .map(|(_, r)| r)
        .collect();
    assert_eq!(
        sends,
        [vec![
            "InternalQueue.Arn".to_owned(),
            "DeadLetterQueue.Arn".to_owned()
        ]]
    );
}

#[test]
fn the_fanout_knows_the_dlq_it_moves_jobs_to_after_their_last_attempt() {
    let t = template();
    let env = &resource(&t, "FanoutFunction")["Properties"]["Environment"]["Variables"];
    let mut refs = Vec::new();
    strings(&env["HERALD_DLQ_URL"], &mut refs);
    assert_eq!(refs, ["DeadLetterQueue"]);
}

#[test]
fn alarms_watch_the_dlq_the_backlog_and_fanout_errors_and_the_dashboard_is_json() {
    let t = template();
    let alarms: Vec<String> = t["Resources"]
        .as_mapping()
        .expect("resources")
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::CloudWatch::Alarm")
        .map(|(_, r)| {
            r["Properties"]["MetricName"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    for metric in [
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
        "Errors",
    ] {
        assert!(
            alarms.iter().any(|m| m == metric),
            "no alarm on {metric}: {alarms:?}"
        );
    }
    let mut body = Vec::new();
    strings(
        &resource(&t, "Dashboard")["Properties"]["DashboardBody"],
        &mut body,
    );
    let mut text = body.concat();
    // Replace the ${...} substitutions with a placeholder before parsing.
    while let Some(start) = text.find("${") {
        let end = text[start..].find('}').expect("closing brace") + start;
        text.replace_range(start..=end, "X");
    }
    let parsed: serde_json::Value =
        serde_json::from_str(&text).expect("the dashboard body is JSON");
    assert!(parsed["widgets"].as_array().is_some_and(|w| !w.is_empty()));
}

fn customer_template() -> Value {
    customer_template_named("sqs-queue.yaml")
}

fn customer_template_named(file: &str) -> Value {
    let path = format!("{}/../../infra/customer/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect(file)).expect("YAML")
}

/// The customer-side templates: each file, the one action Herald may take and the
/// resource it may take it on.
const CUSTOMER_TEMPLATES: [(&str, &str, &str); 3] = [
    ("sqs-queue.yaml", "sqs:SendMessage", "Queue.Arn"),
    ("eventbridge-bus.yaml", "events:PutEvents", "EventBus.Arn"),
    ("sns-topic.yaml", "sns:Publish", "Topic"),
];

/// Herald's way into a customer template's resource: a role assumable only by the
/// Herald roles named, only with the store's external id and only in a session tagged
/// with the store, or a user; either may take `action` on `resource` and nothing else,
/// and no output carries the secret half of the key.
fn assert_herald_may_only(file: &str, t: &Value, action_allowed: &str, resource_allowed: &str) {
    let trust = &resource(t, "DeliveryRole")["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    let mut actions = Vec::new();
    for st in trust.as_sequence().expect("statements") {
        let action = st["Action"].as_str().expect("one action").to_owned();
        let equals = &st["Condition"]["StringEquals"];
        let mut tag = Vec::new();
        strings(&equals["aws:RequestTag/herald:store"], &mut tag);
        assert_eq!(tag, ["StoreId"], "{file} {action}");
        if action == "sts:AssumeRole" {
            let mut id = Vec::new();
            strings(&equals["sts:ExternalId"], &mut id);
            assert_eq!(id, ["ExternalId"], "{file}");
        } else {
            assert_eq!(action, "sts:TagSession", "{file}");
        }
        actions.push(action);
        let mut principals = Vec::new();
        strings(&st["Principal"]["AWS"], &mut principals);
        assert!(
            principals.iter().any(|p| p == "HeraldFanoutRoleArn"),
            "{file} {principals:?}"
        );
        assert!(principals
            .iter()
            .all(|p| p.starts_with("Herald") || p == "HasApiRole"));
    }
    actions.sort();
    assert_eq!(actions, ["sts:AssumeRole", "sts:TagSession"], "{file}");
    for who in ["DeliveryRole", "DeliveryUser"] {
        for policy in resource(t, who)["Properties"]["Policies"]
            .as_sequence()
            .expect("policies")
        {
            for st in policy["PolicyDocument"]["Statement"]
                .as_sequence()
                .expect("statements")
            {
                let (mut actions, mut resources) = (Vec::new(), Vec::new());
                strings(&st["Action"], &mut actions);
                strings(&st["Resource"], &mut resources);
                assert_eq!(actions, [action_allowed], "{file} {who}");
                assert_eq!(resources, [resource_allowed], "{file} {who}");
            }
        }
    }
    let mut outputs = Vec::new();
    strings(&t["Outputs"], &mut outputs);
    assert!(
        !outputs.iter().any(|o| o.contains("SecretAccessKey")),
        "{file} {outputs:?}"
    );
}

#[test]
fn the_customer_template_lets_herald_only_send_to_that_queue_and_never_outputs_a_secret() {
    let t = customer_template();
    assert_herald_may_only("sqs-queue.yaml", &t, "sqs:SendMessage", "Queue.Arn");
    // Both queues encrypted, the queue redrives to its DLQ.
    for q in ["Queue", "DeadLetterQueue"] {
        assert_eq!(resource(&t, q)["Properties"]["SqsManagedSseEnabled"], true);
    }
    let mut redrive = Vec::new();
    strings(
        &resource(&t, "Queue")["Properties"]["RedrivePolicy"],
        &mut redrive,
    );
    assert!(redrive.iter().any(|s| s == "DeadLetterQueue.Arn"));
}

#[test]
fn the_bus_and_topic_templates_let_herald_only_put_events_or_publish_there_and_never_output_a_secret(
) {
    for (file, action, resource_allowed) in &CUSTOMER_TEMPLATES[1..] {
        let t = customer_template_named(file);
        assert_herald_may_only(file, &t, action, resource_allowed);
    }
    // The topic is encrypted.
    let t = customer_template_named("sns-topic.yaml");
    let mut key = Vec::new();
    strings(
        &resource(&t, "Topic")["Properties"]["KmsMasterKeyId"],
        &mut key,
    );
    assert_eq!(key, ["alias/aws/sns"]);
}

#[test]
fn herald_may_tag_the_customer_role_sessions_it_assumes_only_with_the_store() {
    let t = template();
    let mut assumers = 0;
    for (name, r) in t["Resources"].as_mapping().expect("resources") {
        let Some(policies) = r["Properties"]["Policies"].as_sequence() else {
            continue;
        };
        let statements: Vec<&Value> = policies
            .iter()
            .filter_map(|p| p["Statement"].as_sequence())
            .flatten()
            .collect();
        let allows = |action: &str| {
            statements.iter().copied().find(|st| {
                let mut actions = Vec::new();
                strings(&st["Action"], &mut actions);
                actions.iter().any(|a| a == action)
            })
        };
        if allows("sts:AssumeRole").is_none() {
            continue;
        }
        assumers += 1;
        let tag = allows("sts:TagSession").unwrap_or_else(|| panic!("{name:?} cannot tag"));
        let mut keys = Vec::new();
        strings(
            &tag["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
            &mut keys,
        );
        assert_eq!(keys, ["herald:store"], "{name:?}");
        assert_eq!(
            tag["Condition"]["Null"]["aws:RequestTag/herald:store"],
            "false"
        );
    }
    assert_eq!(assumers, 2, "the api and fanout functions");
}

#[test]
fn plain_stomp_is_refused_unless_the_stack_allows_it_and_the_api_and_fanout_both_know() {
    let t = template();
    let p = &t["Parameters"]["AllowPlainStomp"];
    assert_eq!(p["Type"], "String");
    assert_eq!(p["Default"], "false", "TLS only unless asked");
    let allowed: Vec<&str> = p["AllowedValues"]
        .as_sequence()
        .expect("allowed values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, ["true", "false"]);
    // The api validates (and test-delivers), the fan-out delivers; ingest does neither.
    for function in ["ApiFunction", "FanoutFunction"] {
        let env = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        let mut refs = Vec::new();
        strings(&env["HERALD_ALLOW_PLAIN_STOMP"], &mut refs);
        assert_eq!(refs, ["AllowPlainStomp"], "{function}");
    }
    let ingest = &resource(&t, "IngestFunction")["Properties"]["Environment"]["Variables"];
    assert!(ingest["HERALD_ALLOW_PLAIN_STOMP"].is_null());
}

/// The functions CloudFormation evaluates inside `Rules`; any other (`Fn::Join`,
/// `Fn::Sub`, ...) makes it refuse the change set, whatever the parameters.
/// See <https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/rules-section-structure.html>.
const RULE_FUNCTIONS: [&str; 11] = [
    "And",
    "Contains",
    "EachMemberEquals",
    "EachMemberIn",
    "Equals",
    "Not",
    "Or",
    "RefAll",
    "ValueOf",
    "ValueOfAll",
    "Ref",
];

/// Every intrinsic function used inside `v`, in short (`!Join`) or long (`Fn::Join`,
/// `Ref`) form, without its prefix.
fn functions_used(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Sequence(items) => items.iter().for_each(|i| functions_used(i, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            if let Some(k) = k.as_str() {
                if let Some(name) = k.strip_prefix("Fn::") {
                    out.push(name.to_owned());
                } else if k == "Ref" || k == "Condition" {
                    out.push(k.to_owned());
                }
            }
            functions_used(v, out);
        }),
        Value::Tagged(t) => {
            out.push(t.tag.to_string().trim_start_matches('!').to_owned());
            functions_used(&t.value, out);
        }
        _ => {}
    }
}

#[test]
fn every_rule_uses_only_the_functions_cloudformation_allows_in_rules() {
    let customer = CUSTOMER_TEMPLATES.map(|(file, _, _)| (file, customer_template_named(file)));
    for (file, t) in std::iter::once(("template.yaml", template())).chain(customer) {
        let rules = t["Rules"].as_mapping().expect("rules");
        assert!(!rules.is_empty());
        for (name, rule) in rules {
            let mut used = Vec::new();
            functions_used(rule, &mut used);
            assert!(!used.is_empty(), "{file} {name:?}");
            for f in &used {
                assert!(
                    RULE_FUNCTIONS.contains(&f.as_str()),
                    "{file}: rule {name:?} uses {f}, which CloudFormation refuses in Rules"
                );
            }
        }
    }
}

#[test]
fn a_jwt_stack_needs_an_audience_and_the_rule_says_so() {
    let t = template();
    let rule = &t["Rules"]["JwtNeedsIssuerAndAudience"];
    let audience = rule["Assertions"]
        .as_sequence()
        .expect("assertions")
        .iter()
        .find(|a| {
            a["AssertDescription"]
                .as_str()
                .is_some_and(|d| d.starts_with("JwtAudience"))
        })
        .expect("an assertion on JwtAudience");
    let mut refs = Vec::new();
    strings(&audience["Assert"], &mut refs);
    assert!(refs.iter().any(|r| r == "JwtAudience"), "{refs:?}");
    assert_eq!(t["Parameters"]["JwtAudience"]["Type"], "CommaDelimitedList");
}

#[test]
fn the_internal_queue_and_its_dlq_keep_jobs_fourteen_days() {
    // A job that expires in the internal queue vanishes without reaching the DLQ; in
    // the DLQ a job keeps its first enqueue time, so the DLQ keeps at least as long.
    let t = template();
    let internal = number(&resource(&t, "InternalQueue")["Properties"]["MessageRetentionPeriod"]);
    let dlq = number(&resource(&t, "DeadLetterQueue")["Properties"]["MessageRetentionPeriod"]);
    assert_eq!(internal, 1_209_600);
    assert_eq!(dlq, 1_209_600);
}

/// The values of an alarm's `Dimensions`, by name, as the strings they hold.
fn dimensions(alarm: &Value) -> Vec<(String, Vec<String>)> {
    dimensions_of(&alarm["Properties"]["Dimensions"])
}

/// The values of a `Dimensions` list, by name.
fn dimensions_of(dimensions: &Value) -> Vec<(String, Vec<String>)> {
    dimensions
        .as_sequence()
        .map(|d| {
            d.iter()
                .map(|d| {
                    let mut value = Vec::new();
                    strings(&d["Value"], &mut value);
                    (d["Name"].as_str().expect("name").to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `name` is an alarm on `namespace`/`metric` with `dims`, notifying the
/// alarm topic.
fn assert_alarm(t: &Value, name: &str, namespace: &str, metric: &str, dims: &[(&str, &str)]) {
    let alarm = resource(t, name);
    assert_eq!(alarm["Type"], "AWS::CloudWatch::Alarm", "{name}");
    assert_eq!(alarm["Properties"]["Namespace"], namespace, "{name}");
    assert_eq!(alarm["Properties"]["MetricName"], metric, "{name}");
    let expected: Vec<(String, Vec<String>)> = dims
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect();
    assert_eq!(dimensions(alarm), expected, "{name}");
}

#[test]
fn an_ingest_invocation_that_keeps_failing_waits_in_the_ingest_failure_queue() {
    let t = template();
    let config = &resource(&t, "IngestFunction")["Properties"]["EventInvokeConfig"];
    assert_eq!(config["MaximumRetryAttempts"], 2);
    let on_failure = &config["DestinationConfig"]["OnFailure"];
    assert_eq!(
        on_failure["Type"], "SQS",
        "SAM grants sqs:SendMessage on it"
    );
    let mut destination = Vec::new();
    strings(&on_failure["Destination"], &mut destination);
    assert_eq!(destination, ["IngestFailureQueue.Arn"]);
    let queue = &resource(&t, "IngestFailureQueue")["Properties"];
    assert_eq!(number(&queue["MessageRetentionPeriod"]), 1_209_600);
    assert_eq!(queue["SqsManagedSseEnabled"], true);
    // Nothing but SAM's destination policy sends there: no function policy names it.
    for function in ["ApiFunction", "IngestFunction", "FanoutFunction"] {
        for (action, resources) in grants(&t, function) {
            assert!(
                !resources
                    .iter()
                    .any(|r| r.starts_with("IngestFailureQueue")),
                "{function} {action}"
            );
        }
    }
    assert_alarm(
        &t,
        "IngestFailureAlarm",
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        &[("QueueName", "IngestFailureQueue.QueueName")],
    );
    let mut url = Vec::new();
    strings(&t["Outputs"]["IngestFailureQueueUrl"]["Value"], &mut url);
    assert_eq!(url, ["IngestFailureQueue"]);
}

#[test]
fn make_deploy_deploys_the_architecture_it_built_and_a_plain_sam_build_asks_nothing() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let makefile = std::fs::read_to_string(format!("{root}/Makefile")).expect("Makefile");
    // The recipe of a target, its continuation lines joined.
    let recipe = |target: &str| -> String {
        let mut lines = makefile
            .lines()
            .skip_while(|l| !l.starts_with(&format!("{target}:")))
            .skip(1)
            .take_while(|l| l.starts_with('\t'));
        let mut out = String::new();
        for l in lines.by_ref() {
            out.push_str(l.trim().trim_end_matches('\\'));
            out.push(if l.ends_with('\\') { ' ' } else { '\n' });
        }
        out
    };
    let build = recipe("sam-build");
    assert!(
        build.contains("build --beta-features --parameter-overrides Architecture=$(ARCH)"),
        "{build}"
    );
    let deploy = recipe("deploy");
    let deploys: Vec<&str> = deploy
        .split([';', '\n'])
        .filter(|c| c.contains("$(SAM) deploy"))
        .collect();
    assert_eq!(deploys.len(), 2, "guided and plain: {deploy}");
    for command in deploys {
        // The last override wins: the architecture built, after any saved ones.
        assert!(
            command.contains("--parameter-overrides")
                && command.trim_end().ends_with("Architecture=$(ARCH)"),
            "{command}"
        );
    }
    let samconfig =
        std::fs::read_to_string(format!("{root}/samconfig.toml")).expect("samconfig.toml");
    let build_section: Vec<&str> = samconfig
        .lines()
        .skip_while(|l| *l != "[default.build.parameters]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .map(str::trim)
        .collect();
    assert!(
        build_section.contains(&"beta_features = true"),
        "{build_section:?}"
    );
}

/// The dashboard body, parsed, with each `${...}` substitution replaced by `X`.
fn dashboard(t: &Value) -> serde_json::Value {
    let mut body = Vec::new();
    strings(
        &resource(t, "Dashboard")["Properties"]["DashboardBody"],
        &mut body,
    );
    let mut text = body.concat();
    while let Some(start) = text.find("${") {
        let end = text[start..].find('}').expect("closing brace") + start;
        text.replace_range(start..=end, "X");
    }
    serde_json::from_str(&text).expect("the dashboard body is JSON")
}

#[test]
fn the_dashboard_and_alarms_name_only_metrics_and_dimensions_the_fanout_emits() {
    use herald_core::metrics::{DIMENSIONS, METRICS, NAMESPACE};
    let t = template();
    let dimensions_emitted: std::collections::BTreeSet<&str> = DIMENSIONS.into_iter().collect();
    let mut named = std::collections::BTreeSet::new();
    let body = dashboard(&t);
    for widget in body["widgets"].as_array().expect("widgets") {
        let Some(metrics) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        for m in metrics {
            let m = m.as_array().expect("a metric row");
            if let Some(expression) = m[0]["expression"].as_str() {
                // SEARCH('{Namespace,Dim,...} Dim="v" MetricName="Name"', ...)
                let Some(open) = expression.find('{') else {
                    continue;
                };
                let close = expression[open..].find('}').expect("closing brace") + open;
                let mut schema = expression[open + 1..close].split(',');
                if schema.next() != Some(NAMESPACE) {
                    continue;
                }
                let schema: std::collections::BTreeSet<&str> = schema.collect();
                assert_eq!(schema, dimensions_emitted, "{expression}");
                let terms =
                    &expression[close + 1..expression[close..].find('\'').expect("quote") + close];
                let mut filters = Vec::new();
                for term in terms.split_whitespace() {
                    let (key, value) = term.split_once('=').expect("key=value");
                    if key == "MetricName" {
                        let name = value.trim_matches('"');
                        assert!(
                            METRICS.contains(&name),
                            "{name} is not emitted: {expression}"
                        );
                        named.insert(name.to_owned());
                    } else {
                        assert!(dimensions_emitted.contains(key), "{key}: {expression}");
                        filters.push(key);
                    }
                }
                assert_eq!(filters, ["Stack"], "one stack's records: {expression}");
            } else if m[0] == NAMESPACE {
                let name = m[1].as_str().expect("metric name");
                assert!(METRICS.contains(&name), "{name} is not emitted");
                named.insert(name.to_owned());
                let dims: std::collections::BTreeSet<&str> = m[2..]
                    .iter()
                    .step_by(2)
                    .filter_map(|d| d.as_str())
                    .collect();
                assert_eq!(dims, dimensions_emitted);
            }
        }
    }
    let named: Vec<String> = named.into_iter().collect();
    assert_eq!(named, METRICS, "the dashboard shows every metric");
    for (name, r) in t["Resources"].as_mapping().expect("resources") {
        if r["Type"] != "AWS::CloudWatch::Alarm" || r["Properties"]["Namespace"] != NAMESPACE {
            continue;
        }
        let metric = r["Properties"]["MetricName"].as_str().expect("metric");
        assert!(METRICS.contains(&metric), "{name:?}: {metric}");
        let dims: std::collections::BTreeSet<String> =
            dimensions(r).into_iter().map(|(n, _)| n).collect();
        let emitted: std::collections::BTreeSet<String> =
            DIMENSIONS.iter().map(|d| d.to_string()).collect();
        assert_eq!(dims, emitted, "{name:?}");
    }
}

/// Evaluates a template expression for `params`: `!Ref` to a parameter, `!If`,
/// `!Equals`, `!Or`, `!And`, `!Not` and `!Condition`; a condition is `"true"` or
/// `"false"`.
fn eval(t: &Value, v: &Value, params: &[(&str, &str)]) -> String {
    let arg = |v: &Value, i: usize| v[i].clone();
    let truth = |b: bool| b.to_string();
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Tagged(tagged) => {
            let args = &tagged.value;
            match tagged.tag.to_string().trim_start_matches('!') {
                "Ref" => {
                    let name = args.as_str().expect("a name");
                    params
                        .iter()
                        .find(|(p, _)| *p == name)
                        .map(|(_, value)| value.to_string())
                        .unwrap_or_else(|| panic!("no value for {name}"))
                }
                "Equals" => truth(eval(t, &arg(args, 0), params) == eval(t, &arg(args, 1), params)),
                "Or" => truth(
                    args.as_sequence()
                        .expect("list")
                        .iter()
                        .any(|a| eval(t, a, params) == "true"),
                ),
                "And" => truth(
                    args.as_sequence()
                        .expect("list")
                        .iter()
                        .all(|a| eval(t, a, params) == "true"),
                ),
                "Not" => truth(eval(t, &arg(args, 0), params) == "false"),
                // Left as written: its names are the stack's, not parameters.
                "Sub" => args.as_str().expect("a plain !Sub").to_owned(),
                "Condition" => eval(t, &t["Conditions"][args.as_str().expect("name")], params),
                "If" => {
                    let condition = args[0].as_str().expect("a condition");
                    if eval(t, &t["Conditions"][condition], params) == "true" {
                        eval(t, &arg(args, 1), params)
                    } else {
                        eval(t, &arg(args, 2), params)
                    }
                }
                other => panic!("cannot evaluate !{other}"),
            }
        }
        other => panic!("cannot evaluate {other:?}"),
    }
}

#[test]
fn lambda_keeps_report_lines_and_emf_records_whatever_the_log_level() {
    // Lambda drops a JSON-format function's lines below ApplicationLogLevel, and an
    // EMF record (no "level" key) counts as INFO; START/END/REPORT are INFO system
    // logs. So Lambda never filters above INFO: the functions filter their own logs at
    // LogLevel (HERALD_LOG_LEVEL).
    // See <https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs-log-level.html>.
    let t = template();
    let levels: Vec<&str> = t["Parameters"]["LogLevel"]["AllowedValues"]
        .as_sequence()
        .expect("levels")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(levels, ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]);
    for function in ["ApiFunction", "IngestFunction", "FanoutFunction"] {
        let props = &resource(&t, function)["Properties"];
        let logging = &props["LoggingConfig"];
        assert_eq!(logging["LogFormat"], "JSON", "{function}");
        assert_eq!(logging["SystemLogLevel"], "INFO", "{function}");
        for level in &levels {
            let params = [("LogLevel", *level)];
            let lambda = eval(&t, &logging["ApplicationLogLevel"], &params);
            let expected = if matches!(*level, "WARN" | "ERROR") {
                "INFO"
            } else {
                level
            };
            assert_eq!(lambda, expected, "{function} at {level}");
            let own = eval(
                &t,
                &props["Environment"]["Variables"]["HERALD_LOG_LEVEL"],
                &params,
            );
            assert_eq!(own, *level, "{function} at {level}");
        }
    }
}

/// The resources and attributes a function's variable `name` refers to.
fn variable_refs(t: &Value, function: &str, name: &str) -> Vec<String> {
    let mut named = Vec::new();
    strings(
        &resource(t, function)["Properties"]["Environment"]["Variables"][name],
        &mut named,
    );
    named
}

/// The `HERALD_*` variables a function is given.
fn environment(t: &Value, function: &str) -> Vec<String> {
    resource(t, function)["Properties"]["Environment"]["Variables"]
        .as_mapping()
        .expect("variables")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn every_function_is_given_what_its_stack_sets_and_nothing_it_does_not_read() {
    let t = template();
    for (function, env) in [
        ("ApiFunction", herald_api::settings::ENV),
        ("IngestFunction", herald_core::config::INGEST_ENV),
        ("FanoutFunction", herald_core::config::FANOUT_ENV),
        ("SweeperFunction", herald_core::config::SWEEPER_ENV),
    ] {
        let given = environment(&t, function);
        for name in env.stack {
            assert!(given.iter().any(|g| g == name), "{function} lacks {name}");
        }
        for name in &given {
            assert!(env.reads(name), "{function} does not read {name}");
        }
    }
}

#[test]
fn every_variable_the_functions_settings_read_is_listed() {
    // Each HERALD_ name in the code that reads a Lambda function's settings belongs to
    // a function's list, which the test above compares with the template.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let lists = [
        herald_api::settings::ENV,
        herald_core::config::INGEST_ENV,
        herald_core::config::FANOUT_ENV,
        herald_core::config::SWEEPER_ENV,
    ];
    let mut seen = 0;
    for file in [
        "core/src/config.rs",
        "core/src/access.rs",
        "core/src/telemetry.rs",
        "api/src/settings.rs",
    ] {
        let source = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        // The code, not its tests.
        let mut rest = source.split("#[cfg(test)]").next().unwrap_or_default();
        while let Some(at) = rest.find("\"HERALD_") {
            let name: String = rest[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            rest = &rest[at + 1 + name.len()..];
            if name == "HERALD_" {
                continue; // the prefix itself
            }
            seen += 1;
            assert!(
                lists.iter().any(|l| l.reads(&name)),
                "{file} reads {name}, which no function lists"
            );
        }
    }
    assert!(seen > 20, "{seen}");
}

/// A key policy's statements: (sid, principals, actions, the statement). A statement
/// for principal `*` names its principals by `aws:PrincipalArn` (and must).
fn key_statements(t: &Value) -> Vec<(String, Vec<String>, Vec<String>, Value)> {
    key_statements_of(t, "SecretsKey")
}

/// The principals the policy of the key `key` allows `action`, sorted.
fn may(t: &Value, key: &str, action: &str) -> Vec<String> {
    let mut out: Vec<String> = key_statements_of(t, key)
        .into_iter()
        .filter(|(_, _, actions, _)| actions.iter().any(|a| covers(a, action)))
        .flat_map(|(_, principals, _, _)| principals)
        .collect();
    out.sort();
    out
}

/// [`key_statements`] of the key `key`.
fn key_statements_of(t: &Value, key: &str) -> Vec<(String, Vec<String>, Vec<String>, Value)> {
    resource(t, key)["Properties"]["KeyPolicy"]["Statement"]
        .as_sequence()
        .expect("statements")
        .iter()
        .map(|st| {
            let (mut principals, mut actions) = (Vec::new(), Vec::new());
            strings(&st["Principal"]["AWS"], &mut principals);
            if principals == ["*"] {
                principals.clear();
                strings(
                    &st["Condition"]["ArnEquals"]["aws:PrincipalArn"],
                    &mut principals,
                );
                assert!(!principals.is_empty(), "principal * unconditioned: {st:?}");
            }
            strings(&st["Action"], &mut actions);
            let sid = st["Sid"].as_str().unwrap_or_default().to_owned();
            (sid, principals, actions, st.clone())
        })
        .collect()
}

/// Whether a policy's action pattern (`kms:Get*`) covers `action`.
fn covers(pattern: &str, action: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => action.starts_with(prefix),
        None => pattern == action,
    }
}

#[test]
fn only_the_api_fanout_and_sweeper_roles_use_the_secrets_key_and_the_account_only_administers_it() {
    let t = template();
    let uses = [
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
        "kms:GenerateDataKeyWithoutPlaintext",
        "kms:ReEncryptFrom",
        "kms:ReEncryptTo",
        "kms:CreateGrant",
    ];
    let who_may = |action: &str| may(&t, "SecretsKey", action);
    assert_eq!(
        who_may("kms:Decrypt"),
        [
            "ApiFunctionRole.Arn",
            "FanoutFunctionRole.Arn",
            "SweeperFunctionRole.Arn"
        ]
    );
    assert_eq!(
        who_may("kms:GenerateDataKey"),
        ["ApiFunctionRole.Arn", "SweeperFunctionRole.Arn"]
    );
    for action in &uses[1..] {
        if *action != "kms:GenerateDataKey" {
            assert!(
                who_may(action).is_empty(),
                "{action}: {:?}",
                who_may(action)
            );
        }
    }
    // Each use is bound to the encryption context of one store's integration.
    for (sid, _, actions, st) in key_statements(&t) {
        if actions.iter().any(|a| uses.iter().any(|u| covers(a, u))) {
            let mut keys = Vec::new();
            strings(
                &st["Condition"]["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"],
                &mut keys,
            );
            assert_eq!(keys, ["herald:store", "herald:integration"], "{sid}");
            assert_eq!(
                st["Condition"]["Null"]["kms:EncryptionContextKeys"], "false",
                "{sid}"
            );
        }
    }
    // The account administers the key (so that it is never locked out), limited to
    // the named administrators when there are any.
    let admin = who_may("kms:PutKeyPolicy");
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert!(admin[0].ends_with(":root"), "{admin:?}");
    let p = &t["Parameters"]["KeyAdministratorArns"];
    assert_eq!(p["Type"], "CommaDelimitedList");
    assert_eq!(p["Default"], "");
    let (_, _, _, st) = key_statements(&t)
        .into_iter()
        .find(|(_, principals, _, _)| principals == &admin)
        .expect("the administration statement");
    let mut limit = Vec::new();
    strings(&st["Condition"], &mut limit);
    assert!(
        limit.iter().any(|s| s == "KeyAdministratorArns")
            && limit.iter().any(|s| s == "HasKeyAdministrators"),
        "{limit:?}"
    );
    // The functions' own policies grant no KMS action: the key policy alone decides.
    for function in [
        "ApiFunction",
        "IngestFunction",
        "FanoutFunction",
        "SweeperFunction",
    ] {
        assert!(kms_grants(&t, function).is_empty(), "{function}");
    }
    let alias = resource(&t, "SecretsKeyAlias");
    assert_eq!(alias["DeletionPolicy"], "Retain");
    assert_eq!(alias["UpdateReplacePolicy"], "Retain");
}

#[test]
fn alarms_watch_the_api_the_functions_the_table_jobs_in_flight_and_ingest_failures() {
    let t = template();
    assert_alarm(
        &t,
        "Api5xxAlarm",
        "AWS/ApiGateway",
        "5xx",
        &[("ApiId", "HttpApi")],
    );
    for (function, prefix) in [
        ("ApiFunction", "Api"),
        ("IngestFunction", "Ingest"),
        ("FanoutFunction", "Fanout"),
    ] {
        for metric in ["Errors", "Throttles"] {
            assert_alarm(
                &t,
                &format!("{prefix}{metric}Alarm"),
                "AWS/Lambda",
                metric,
                &[("FunctionName", function)],
            );
        }
    }
    // The sweeper runs every 5 minutes, and what a failed run leaves the next one sweeps:
    // its alarm fires on two failed runs within 15 minutes (of about three).
    assert_alarm(
        &t,
        "SweeperErrorsAlarm",
        "AWS/Lambda",
        "Errors",
        &[("FunctionName", "SweeperFunction")],
    );
    let sweeper = &resource(&t, "SweeperErrorsAlarm")["Properties"];
    assert_eq!(
        (
            number(&sweeper["Period"]),
            number(&sweeper["EvaluationPeriods"]),
            number(&sweeper["Threshold"]),
        ),
        (900, 1, 2)
    );
    assert_eq!(
        sweeper["ComparisonOperator"],
        "GreaterThanOrEqualToThreshold"
    );
    assert_alarm(
        &t,
        "InFlightAlarm",
        "AWS/SQS",
        "ApproximateNumberOfMessagesNotVisible",
        &[("QueueName", "InternalQueue.QueueName")],
    );
    let mut threshold = Vec::new();
    strings(
        &resource(&t, "InFlightAlarm")["Properties"]["Threshold"],
        &mut threshold,
    );
    assert_eq!(threshold, ["AlarmJobsInFlight"]);
    let p = &t["Parameters"]["AlarmJobsInFlight"];
    assert!(number(&p["MaxValue"]) <= 120_000, "SQS's in-flight limit");
    // The table: read and write throttle events, summed.
    let table = resource(&t, "TableThrottlesAlarm");
    let mut watched = Vec::new();
    for m in table["Properties"]["Metrics"]
        .as_sequence()
        .expect("metrics")
    {
        let stat = &m["MetricStat"]["Metric"];
        if stat.is_null() {
            continue;
        }
        assert_eq!(stat["Namespace"], "AWS/DynamoDB");
        assert_eq!(
            dimensions_of(&stat["Dimensions"]),
            [("TableName".to_owned(), vec!["Table".to_owned()])]
        );
        watched.push(stat["MetricName"].as_str().expect("name").to_owned());
    }
    watched.sort();
    assert_eq!(watched, ["ReadThrottleEvents", "WriteThrottleEvents"]);
    // Every alarm notifies the topic, when there is one.
    for (name, r) in t["Resources"].as_mapping().expect("resources") {
        if r["Type"] == "AWS::CloudWatch::Alarm" {
            for actions in ["AlarmActions", "OKActions"] {
                let mut topic = Vec::new();
                strings(&r["Properties"][actions], &mut topic);
                assert!(
                    topic.iter().any(|s| s == "AlarmTopicArn"),
                    "{name:?} {actions}"
                );
            }
        }
    }
}

#[test]
fn tracing_is_a_choice_and_api_access_is_logged_for_log_retention_days() {
    let t = template();
    let p = &t["Parameters"]["Tracing"];
    assert_eq!(p["Default"], "Disabled", "off unless asked");
    let allowed: Vec<&str> = p["AllowedValues"]
        .as_sequence()
        .expect("allowed values")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(allowed, ["Disabled", "Active"]);
    let mut tracing = Vec::new();
    strings(&t["Globals"]["Function"]["Tracing"], &mut tracing);
    assert_eq!(tracing, ["Tracing"]);
    let stage = &resource(&t, "HttpApiStage")["Properties"]["AccessLogSettings"];
    let mut destination = Vec::new();
    strings(&stage["DestinationArn"], &mut destination);
    assert_eq!(destination, ["ApiAccessLogGroup.Arn"]);
    let format: serde_json::Value =
        serde_json::from_str(stage["Format"].as_str().expect("format")).expect("JSON lines");
    for field in ["requestId", "routeKey", "status", "integrationStatus"] {
        assert!(format[field].is_string(), "{field}");
    }
    let group = &resource(&t, "ApiAccessLogGroup")["Properties"];
    let mut retention = Vec::new();
    strings(&group["RetentionInDays"], &mut retention);
    assert_eq!(retention, ["LogRetentionDays"]);
}

#[test]
fn large_event_bodies_are_put_by_ingest_read_by_the_fanout_and_kept_private_encrypted_and_expiring()
{
    let t = template();
    let bucket = resource(&t, "EventBucket");
    assert_eq!(bucket["Type"], "AWS::S3::Bucket");
    let p = &bucket["Properties"];
    // Encrypted at rest with S3's own keys (SSE-S3).
    assert_eq!(
        p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            ["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );
    // Never public.
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(
            p["PublicAccessBlockConfiguration"][setting], true,
            "{setting}"
        );
    }
    // Every body expires with the delivery log.
    let rules = p["LifecycleConfiguration"]["Rules"]
        .as_sequence()
        .expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0]["Status"], "Enabled");
    let mut days = Vec::new();
    strings(&rules[0]["ExpirationInDays"], &mut days);
    assert_eq!(days, ["DeliveryLogRetentionDays"]);
    // TLS only.
    let policy = resource(&t, "EventBucketPolicy");
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_sequence()
        .expect("statements");
    assert!(statements.iter().any(|s| s["Effect"] == "Deny"
        && s["Action"] == "s3:*"
        && s["Condition"]["Bool"]["aws:SecureTransport"] == false));
    // Ingest puts, the fan-out gets, the api gets (the minutes-long GETs it presigns
    // for GET /v2/event-data/{token}), under events/ only.
    let s3 = |function: &str| -> Vec<(String, Vec<String>)> {
        grants(&t, function)
            .into_iter()
            .filter(|(a, _)| a.starts_with("s3:"))
            .collect()
    };
    let under_events = vec!["${EventBucket.Arn}/events/*".to_owned()];
    assert_eq!(
        s3("IngestFunction"),
        [("s3:PutObject".to_owned(), under_events.clone())]
    );
    assert_eq!(
        s3("FanoutFunction"),
        [("s3:GetObject".to_owned(), under_events.clone())]
    );
    assert_eq!(
        s3("ApiFunction"),
        [("s3:GetObject".to_owned(), under_events)]
    );
    for function in ["IngestFunction", "FanoutFunction", "ApiFunction"] {
        assert_eq!(
            variable_refs(&t, function, "HERALD_EVENT_BUCKET"),
            ["EventBucket"],
            "{function}"
        );
    }
}

#[test]
fn datarefs_are_made_by_the_fanout_and_checked_by_the_api_with_an_hmac_key_nobody_reads() {
    let t = template();
    // An HMAC key in KMS: its bytes never leave KMS.
    let key = resource(&t, "DatarefKey");
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["KeySpec"], "HMAC_256");
    assert_eq!(key["Properties"]["KeyUsage"], "GENERATE_VERIFY_MAC");
    // Its policy lets the fan-out make codes and the api check them, nothing more;
    // the account administers it without using it.
    let who_may = |action: &str| may(&t, "DatarefKey", action);
    assert_eq!(who_may("kms:GenerateMac"), ["FanoutFunctionRole.Arn"]);
    assert_eq!(who_may("kms:VerifyMac"), ["ApiFunctionRole.Arn"]);
    for action in [
        "kms:CreateGrant",
        "kms:Decrypt",
        "kms:Encrypt",
        "kms:GenerateDataKey",
    ] {
        assert!(
            who_may(action).is_empty(),
            "{action}: {:?}",
            who_may(action)
        );
    }
    let admin = who_may("kms:PutKeyPolicy");
    assert_eq!(admin.len(), 1, "{admin:?}");
    assert!(admin[0].ends_with(":root"), "{admin:?}");
    let uses: Vec<Vec<String>> = key_statements_of(&t, "DatarefKey")
        .into_iter()
        .filter(|(_, principals, _, _)| principals != &admin)
        .map(|(_, _, actions, _)| actions)
        .collect();
    assert_eq!(uses, [vec!["kms:GenerateMac"], vec!["kms:VerifyMac"]]);
    // The roles' own policies name no KMS action.
    for function in ["ApiFunction", "IngestFunction", "FanoutFunction"] {
        assert!(kms_grants(&t, function).is_empty(), "{function}");
    }
    // Both functions name the key; ingest does not.
    for function in ["ApiFunction", "FanoutFunction"] {
        assert_eq!(
            variable_refs(&t, function, "HERALD_DATAREF_KEY_ID"),
            ["DatarefKey.Arn"],
            "{function}"
        );
    }
    assert!(
        resource(&t, "IngestFunction")["Properties"]["Environment"]["Variables"]
            ["HERALD_DATAREF_KEY_ID"]
            .is_null()
    );
    // The fan-out's URLs start with the API's address: the PublicUrl parameter (a
    // custom domain) when set, else the HTTP API's own.
    let base = &resource(&t, "FanoutFunction")["Properties"]["Environment"]["Variables"]
        ["HERALD_PUBLIC_URL"];
    assert_eq!(
        eval(&t, base, &[("PublicUrl", "")]),
        "https://${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
    );
    assert_eq!(
        eval(&t, base, &[("PublicUrl", "https://events.example.com")]),
        "https://events.example.com"
    );
}

#[test]
fn the_sweeper_removes_ended_rotations_on_a_schedule_through_a_sparse_index_with_only_what_it_needs(
) {
    let t = template();
    // The sparse index of live rotations: keys only, queried by the overlap's end.
    let table = &resource(&t, "Table")["Properties"];
    let gsi = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .expect("indexes")
        .iter()
        .find(|i| i["IndexName"] == "gsi4")
        .expect("the index gsi4");
    let keys: Vec<(&str, &str)> = gsi["KeySchema"]
        .as_sequence()
        .expect("key schema")
        .iter()
        .map(|k| {
            (
                k["AttributeName"].as_str().expect("name"),
                k["KeyType"].as_str().expect("type"),
            )
        })
        .collect();
    assert_eq!(keys, [("gsi4pk", "HASH"), ("gsi4sk", "RANGE")]);
    assert_eq!(gsi["Projection"]["ProjectionType"], "KEYS_ONLY");
    for name in ["gsi4pk", "gsi4sk"] {
        assert!(
            table["AttributeDefinitions"]
                .as_sequence()
                .expect("definitions")
                .iter()
                .any(|d| d["AttributeName"] == name && d["AttributeType"] == "S"),
            "{name}"
        );
    }
    // The sweeper runs on its schedule, and nothing else invokes it.
    let f = resource(&t, "SweeperFunction");
    assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], "sweeper");
    let events = f["Properties"]["Events"].as_mapping().expect("events");
    assert_eq!(events.len(), 1, "{events:?}");
    let (_, event) = events.iter().next().expect("one event");
    assert_eq!(event["Type"], "Schedule");
    assert_eq!(
        event["Properties"]["Schedule"],
        herald_core::sweep::SCHEDULE
    );
    assert_eq!(herald_core::sweep::SCHEDULE, "rate(5 minutes)");
    // It queries the index, reads an item and updates it: nothing else.
    let mut granted = grants(&t, "SweeperFunction");
    granted.sort();
    assert_eq!(
        granted,
        [
            ("dynamodb:GetItem".to_owned(), vec!["Table.Arn".to_owned()]),
            (
                "dynamodb:Query".to_owned(),
                vec!["${Table.Arn}/index/gsi4".to_owned()]
            ),
            (
                "dynamodb:UpdateItem".to_owned(),
                vec!["Table.Arn".to_owned()]
            ),
        ]
    );
    // It opens the secrets and seals them again without the previous one, under the
    // encryption context of one store's integration (checked for every use below).
    let mut keyed: Vec<String> = key_statements(&t)
        .into_iter()
        .filter(|(_, principals, _, _)| principals == &["SweeperFunctionRole.Arn".to_owned()])
        .flat_map(|(_, _, actions, _)| actions)
        .collect();
    keyed.sort();
    assert_eq!(keyed, ["kms:Decrypt", "kms:GenerateDataKey"]);
    let mut named = Vec::new();
    strings(
        &f["Properties"]["Environment"]["Variables"]["HERALD_KMS_KEY_ID"],
        &mut named,
    );
    assert_eq!(named, ["SecretsKey.Arn"]);
}
