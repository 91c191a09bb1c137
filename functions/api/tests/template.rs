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
fn secrets_are_sealed_by_the_api_opened_by_the_fanout_and_never_seen_by_ingest() {
    let t = template();
    let key = resource(&t, "SecretsKey");
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    assert_eq!(
        key["DeletionPolicy"], "Retain",
        "losing the key loses every secret"
    );
    let on_key_only = |grants: &[(String, Vec<String>)]| {
        grants
            .iter()
            .all(|(_, r)| r.iter().all(|r| r.starts_with("SecretsKey")))
    };
    let api = kms_grants(&t, "ApiFunction");
    let mut api_actions: Vec<&str> = api.iter().map(|(a, _)| a.as_str()).collect();
    api_actions.sort_unstable();
    assert_eq!(api_actions, ["kms:Decrypt", "kms:GenerateDataKey"]);
    assert!(on_key_only(&api), "{api:?}");
    let fanout = kms_grants(&t, "FanoutFunction");
    let fanout_actions: Vec<&str> = fanout.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(fanout_actions, ["kms:Decrypt"]);
    assert!(on_key_only(&fanout), "{fanout:?}");
    assert!(kms_grants(&t, "IngestFunction").is_empty());
    for function in ["ApiFunction", "FanoutFunction"] {
        let env = &resource(&t, function)["Properties"]["Environment"]["Variables"];
        let mut named = Vec::new();
        strings(&env["HERALD_KMS_KEY_ID"], &mut named);
        assert_eq!(named, ["SecretsKey.Arn"], "{function} names the key");
    }
    let ingest_env = &resource(&t, "IngestFunction")["Properties"]["Environment"]["Variables"];
    assert!(ingest_env["HERALD_KMS_KEY_ID"].is_null());
}

#[test]
fn every_route_requires_an_authorizer() {
    let t = template();
    let mut routes = 0;
    for (name, r) in t["Resources"].as_mapping().expect("resources") {
        if r["Type"] == "AWS::ApiGatewayV2::Route" {
            routes += 1;
            let auth = &r["Properties"]["AuthorizationType"];
            let mut values = Vec::new();
            strings(auth, &mut values);
            assert!(!values.is_empty(), "{name:?} has no AuthorizationType");
            assert!(!values.iter().any(|v| v == "NONE"), "{name:?} is open");
        }
    }
    assert!(routes > 0);
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
        if dlqs.contains(name) {
            assert!(
                redrive.is_null(),
                "{name} is a DLQ and has no DLQ of its own"
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
    // The api touches queues only to replay: it reads the DLQ and sends to the
    // internal queue, never receives from it.
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
    assert!(!ingest
        .iter()
        .any(|a| a == "dynamodb:UpdateItem" || a == "sqs:ChangeMessageVisibility"));
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
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../infra/customer/sqs-queue.yaml"
    );
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).expect("sqs-queue.yaml")).expect("YAML")
}

#[test]
fn the_customer_template_lets_herald_only_send_to_that_queue_and_never_outputs_a_secret() {
    let t = customer_template();
    // The role: assumable only by the Herald roles named, only with the store's
    // external id, and only in a session tagged with the store.
    let trust =
        &resource(&t, "DeliveryRole")["Properties"]["AssumeRolePolicyDocument"]["Statement"];
    let mut actions = Vec::new();
    for st in trust.as_sequence().expect("statements") {
        let action = st["Action"].as_str().expect("one action").to_owned();
        let equals = &st["Condition"]["StringEquals"];
        let mut tag = Vec::new();
        strings(&equals["aws:RequestTag/herald:store"], &mut tag);
        assert_eq!(tag, ["StoreId"], "{action}");
        if action == "sts:AssumeRole" {
            let mut id = Vec::new();
            strings(&equals["sts:ExternalId"], &mut id);
            assert_eq!(id, ["ExternalId"]);
        } else {
            assert_eq!(action, "sts:TagSession");
        }
        actions.push(action);
        let mut principals = Vec::new();
        strings(&st["Principal"]["AWS"], &mut principals);
        assert!(
            principals.iter().any(|p| p == "HeraldFanoutRoleArn"),
            "{principals:?}"
        );
        assert!(principals
            .iter()
            .all(|p| p.starts_with("Herald") || p == "HasApiRole"));
    }
    actions.sort();
    assert_eq!(actions, ["sts:AssumeRole", "sts:TagSession"]);
    // The role and the user may do one thing: SendMessage on this queue.
    for who in ["DeliveryRole", "DeliveryUser"] {
        for policy in resource(&t, who)["Properties"]["Policies"]
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
                assert_eq!(actions, ["sqs:SendMessage"], "{who}");
                assert_eq!(resources, ["Queue.Arn"], "{who}");
            }
        }
    }
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
    // No output carries the secret half of the key.
    let mut outputs = Vec::new();
    strings(&t["Outputs"], &mut outputs);
    assert!(
        !outputs.iter().any(|o| o.contains("SecretAccessKey")),
        "{outputs:?}"
    );
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
