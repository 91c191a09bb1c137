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
fn the_api_function_is_built_with_cargo_lambda_from_its_own_binary() {
    let t = template();
    let f = &t["Resources"]["ApiFunction"];
    assert_eq!(f["Type"], "AWS::Serverless::Function");
    assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda");
    assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], "api");
    assert_eq!(f["Properties"]["CodeUri"], ".");
    assert_eq!(f["Properties"]["Runtime"], "provided.al2023");
    assert_eq!(f["Properties"]["Handler"], "bootstrap");
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
