//! `herald-demo`: the product tour against a running dev server (`make demo` starts
//! everything it needs). Prints what each target received.

use std::process::ExitCode;

use herald_local::tour::{run, Peers};

#[tokio::main]
#[allow(clippy::print_stdout)]
async fn main() -> ExitCode {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    // The checkout whose .run/ holds the broker's password (infra/with-peers.sh sets it).
    let root = var("HERALD_CHECKOUT", ".");
    let password =
        std::fs::read_to_string(format!("{root}/.run/activemq/password")).unwrap_or_default();
    let peers = Peers {
        server: var("HERALD_URL", "http://127.0.0.1:3000"),
        moto: var("MOTO_ENDPOINT", "http://127.0.0.1:5055"),
        broker_password: password.trim().to_owned(),
        store: var("HERALD_DEMO_STORE", "demo"),
    };
    println!("Herald tour: one order.paid event to a webhook, an SQS queue, an EventBridge bus and an SNS topic (moto) and an ActiveMQ queue, then one of Herald's operational events\n");
    match run(&peers).await {
        Ok(report) => {
            let pretty =
                |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
            println!(
                "== webhook received (headers) ==\n{}",
                pretty(&report.webhook.0)
            );
            println!(
                "== webhook received (body) ==\n{}\n",
                pretty(&report.webhook.1)
            );
            println!(
                "== SQS queue received (CloudEvent) ==\n{}\n",
                pretty(&report.sqs)
            );
            println!(
                "== EventBridge bus received (the event, as its rule delivered it) ==\n{}\n",
                pretty(&report.eventbridge)
            );
            println!(
                "== SNS topic received (CloudEvent, as a raw subscription delivered it) ==\n{}\n",
                pretty(&report.sns)
            );
            println!(
                "== ActiveMQ queue received (headers) ==\n{}",
                pretty(&report.stomp.0)
            );
            println!(
                "== ActiveMQ queue received (CloudEvent) ==\n{}\n",
                pretty(&report.stomp.1)
            );
            for (kind, log) in &report.tests {
                println!(
                    "test delivery to {kind}: succeeded={} status_code={} body={} error={}",
                    log["succeeded"], log["status_code"], log["body"], log["error_detail"]
                );
            }
            println!(
                "\n== an operational event: the watcher heard that Herald disabled {} (its endpoint answered 410 Gone) ==\n{}",
                report.operational.1,
                pretty(&report.operational.0["payload"]["data"]["meta"]["alert"])
            );
            println!("\nintegrations: {}", report.integrations.join(", "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("the tour failed: {e}");
            ExitCode::FAILURE
        }
    }
}
