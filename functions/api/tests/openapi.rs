//! The OpenAPI document and the router agree: every route and every status the router
//! answers with is documented, and the document names no route the router lacks.

use serde_yaml_ng::Value;

fn document() -> Value {
    serde_yaml_ng::from_str(herald_api::OPENAPI).expect("openapi.yaml is valid YAML")
}

#[test]
fn every_route_and_status_of_the_router_is_in_the_openapi_document() {
    let doc = document();
    assert_eq!(
        doc["openapi"].as_str().map(|v| v.starts_with("3.")),
        Some(true)
    );
    for route in herald_api::routes() {
        let method = route.method.as_str().to_ascii_lowercase();
        let op = &doc["paths"][route.path][method.as_str()];
        assert!(
            op.is_mapping(),
            "{} {} is not documented",
            route.method,
            route.path
        );
        for status in route.statuses {
            assert!(
                op["responses"][status.to_string().as_str()].is_mapping(),
                "{} {} does not document status {status}",
                route.method,
                route.path
            );
        }
    }
}

#[test]
fn the_openapi_document_names_no_route_the_router_lacks() {
    let doc = document();
    let routes = herald_api::routes();
    let paths = doc["paths"].as_mapping().expect("paths");
    for (path, item) in paths {
        let path = path.as_str().expect("path");
        for (method, _) in item.as_mapping().expect("path item") {
            let method = method.as_str().expect("method");
            if method == "parameters" {
                continue;
            }
            assert!(
                routes
                    .iter()
                    .any(|r| r.path == path && r.method.as_str().eq_ignore_ascii_case(method)),
                "{method} {path} is documented but not routed"
            );
        }
    }
}

#[test]
fn every_reference_in_the_document_resolves() {
    let doc = document();
    let text = herald_api::OPENAPI;
    for piece in text.split("$ref: '#/").skip(1) {
        let target = piece.split('\'').next().expect("ref");
        let mut node = &doc;
        for part in target.split('/') {
            node = &node[part];
        }
        assert!(!node.is_null(), "#/{target} does not resolve");
    }
}
