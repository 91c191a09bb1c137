//! A broker restart between two deliveries is survived: the pooled connection is
//! found dead and the message goes out on a fresh one. In its own test binary, since
//! it restarts the broker the other STOMP tests use (binaries run one at a time).

use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use herald_core::attempt::Outcome;
use herald_core::delivery::stomp::StompDeliverer;
use herald_core::delivery::DeliverTo;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{Integration, Secret, StompConfig, Target};
use herald_core::net::guard::{AddressGuard, Cidr};
use herald_core::testkit::webhook;
use serde_json::json;
use uuid::Uuid;

#[tokio::test]
async fn a_broker_restart_between_two_deliveries_is_survived() {
    let root = herald_testkit::checkout();
    let password = std::fs::read_to_string(format!("{root}/.run/activemq/password"))
        .expect("ActiveMQ is not set up: run `make test` or `infra/activemq.sh start`");
    let integration = Integration {
        target: Target::Stomp(StompConfig {
            addresses: vec!["stomp://127.0.0.1:61613".into()],
            destination: format!("/queue/herald.restart.{}", Uuid::new_v4().simple()),
            username: "herald".into(),
            password: Secret::new(password.trim()),
            virtual_host: None,
        }),
        ..webhook("broker", "s", &["order.paid"], true)
    };
    let job = |n: u32| {
        let event = Event {
            id: format!("evt-{n}"),
            kind: "order.paid".into(),
            occurred_at: Utc::now(),
            payload: json!({"data": {"id": n.to_string()}}).into(),
        };
        DeliveryJob::new(&integration.store_id, integration.id, event, Utc::now())
    };
    let guard = AddressGuard::allowing(vec![Cidr::parse("127.0.0.1/32").expect("cidr")]);
    let d = StompDeliverer::new(guard, &[], Duration::from_secs(10))
        .expect("deliverer")
        .dangerous_allow_plain(true);

    assert_eq!(
        d.deliver(&integration, stomp_config(&integration), &job(1), 1)
            .await
            .outcome,
        Outcome::Delivered
    );
    let restarted = Command::new(format!("{root}/infra/activemq.sh"))
        .arg("restart")
        .status()
        .expect("run infra/activemq.sh");
    assert!(restarted.success(), "the broker did not restart");
    let second = d
        .deliver(&integration, stomp_config(&integration), &job(2), 1)
        .await;
    assert_eq!(second.outcome, Outcome::Delivered, "{second:?}");
}

/// `i`'s STOMP configuration, as the dispatcher hands it to the deliverer.
fn stomp_config(i: &Integration) -> &StompConfig {
    match &i.target {
        Target::Stomp(config) => config,
        other => panic!("not a STOMP target: {other:?}"),
    }
}
