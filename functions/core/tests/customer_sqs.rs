//! The customer SQS target against moto (loopback). Integrations keep real
//! `https://sqs.<region>.amazonaws.com/...` URLs; the endpoint override sends the
//! calls to moto, as `AWS_ENDPOINT_URL` does in the dev server.

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use chrono::Utc;
use herald_core::attempt::Outcome;
use herald_core::aws::local::moto_config;
use herald_core::delivery::sqs::SqsDeliverer;
use herald_core::delivery::DeliverTo;
use herald_core::job::{DeliveryJob, Event};
use herald_core::model::{Integration, Secret, SqsAuth, SqsConfig, Target};
use herald_core::testkit::webhook;
use herald_testkit::http::RequestReader;
use serde_json::{json, Value};
use uuid::Uuid;

fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT")
        .expect("MOTO_ENDPOINT is not set: run `make test` (it starts moto)")
}

fn integration(queue_url: &str, auth: SqsAuth) -> Integration {
    Integration {
        target: Target::AwsSqs(SqsConfig {
            url: queue_url.into(),
            region: "us-east-1".into(),
            auth,
        }),
        ..webhook("queue", "s", &["order.paid"], true)
    }
}

/// `i`'s aws_sqs configuration, as the dispatcher hands it to the deliverer.
fn sqs_config(i: &Integration) -> &SqsConfig {
    match &i.target {
        Target::AwsSqs(config) => config,
        other => panic!("not a aws_sqs target: {other:?}"),
    }
}

fn keys(id: &str, secret: &str) -> SqsAuth {
    SqsAuth::Keys {
        access_key_id: Secret::new(id),
        secret_access_key: Secret::new(secret),
    }
}

fn job(i: &Integration, order_id: &str) -> DeliveryJob {
    let event = Event {
        id: format!("evt-{order_id}"),
        kind: "order.paid".into(),
        occurred_at: Utc::now(),
        payload: json!({"data": {"id": order_id, "type": "order"}, "included": {"items": [1]}})
            .into(),
    };
    DeliveryJob::new(&i.store_id, i.id, event, Utc::now())
}

/// A queue on moto; returns (real-looking URL for the integration, moto client).
async fn queue(sdk: &aws_config::SdkConfig, fifo: bool) -> (String, aws_sdk_sqs::Client) {
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let name = format!(
        "customer-{}{}",
        Uuid::new_v4().simple(),
        if fifo { ".fifo" } else { "" }
    );
    let mut create = sqs.create_queue().queue_name(&name);
    if fifo {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    create.send().await.expect("create queue");
    (
        format!("https://sqs.us-east-1.amazonaws.com/123456789012/{name}"),
        sqs,
    )
}

async fn read_all(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let out = sqs
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive");
    out.messages().to_vec()
}

#[tokio::test]
async fn a_message_lands_in_the_customer_queue_as_a_cloud_event_with_attributes() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (url, sqs) = queue(&sdk, false).await;
    let i = integration(&url, keys("AKIAIOSFODNN7TESTKEY", "test-secret-for-moto"));
    let j = job(&i, "o-1");
    let result = SqsDeliverer::new(sdk.clone())
        .deliver(&i, sqs_config(&i), &j, 1)
        .await;
    assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    assert!(result.body.starts_with("MessageId "));

    let messages = read_all(&sqs, &url).await;
    assert_eq!(messages.len(), 1);
    let body: Value = serde_json::from_str(messages[0].body().expect("body")).expect("json");
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["id"], "evt-o-1");
    assert_eq!(body["type"], "order.paid");
    assert_eq!(body["integrationid"], i.id.to_string());
    assert_eq!(body["storeid"], "s");
    // Elastic Path's shape: `data` is the resource, `included` beside it.
    assert_eq!(body["data"], json!({"id": "o-1", "type": "order"}));
    assert_eq!(body["included"], json!({"items": [1]}));
    let attrs = messages[0].message_attributes().expect("attributes");
    assert_eq!(attrs["type"].string_value(), Some("order.paid"));
    assert_eq!(
        attrs["jobid"].string_value(),
        Some(j.job_id.to_string().as_str())
    );
}

#[tokio::test]
async fn fifo_queues_get_a_group_and_a_deduplication_id_so_retries_do_not_duplicate() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (url, sqs) = queue(&sdk, true).await;
    let i = integration(&url, keys("AKIAIOSFODNN7TESTKEY", "test-secret-for-moto"));
    let j = job(&i, "o-42");
    let deliverer = SqsDeliverer::new(sdk.clone());
    for attempt in 1..=2 {
        assert_eq!(
            deliverer
                .deliver(&i, sqs_config(&i), &j, attempt)
                .await
                .outcome,
            Outcome::Delivered
        );
    }
    let messages = read_all(&sqs, &url).await;
    assert_eq!(messages.len(), 1, "the retry was deduplicated");
    let system = messages[0].attributes().expect("system attributes");
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::MessageGroupId)
            .map(String::as_str),
        Some("o-42")
    );
    assert_eq!(
        system
            .get(&MessageSystemAttributeName::MessageDeduplicationId)
            .map(String::as_str),
        Some(j.job_id.to_string().as_str())
    );
}

#[tokio::test]
async fn a_missing_queue_is_a_classified_failure() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let i = integration(
        "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue",
        keys("AKIAIOSFODNN7TESTKEY", "test-secret-for-moto"),
    );
    let result = SqsDeliverer::new(sdk)
        .deliver(&i, sqs_config(&i), &job(&i, "o"), 1)
        .await;
    assert!(
        matches!(result.outcome, Outcome::Retryable { .. }),
        "{result:?}"
    );
    assert_eq!(
        result.error_detail.as_deref(),
        Some("the queue does not exist")
    );
}

#[tokio::test]
async fn a_role_is_assumed_through_sts_for_keyless_delivery() {
    let sdk = moto_config(&endpoint()).await.expect("moto");
    let (url, sqs) = queue(&sdk, false).await;
    let i = integration(
        &url,
        SqsAuth::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/herald-delivery".into(),
            external_id: "store-s".into(),
        },
    );
    let deliverer = SqsDeliverer::new(sdk);
    for n in 0..2 {
        let result = deliverer
            .deliver(&i, sqs_config(&i), &job(&i, &format!("o-{n}")), 1)
            .await;
        assert_eq!(result.outcome, Outcome::Delivered, "{result:?}");
    }
    assert_eq!(read_all(&sqs, &url).await.len(), 2);
}

/// What an STS stand-in on loopback answers to `AssumeRole`: a fixture session (no
/// real credential), valid far into the future.
const ASSUMED: &str = "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>ASIAFIXTUREFIXTURE00</AccessKeyId><SecretAccessKey>fixture-not-a-secret</SecretAccessKey><SessionToken>fixture-token</SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>AROAFIXTURE:herald</AssumedRoleId><Arn>arn:aws:sts::123456789012:assumed-role/herald-delivery-x/herald</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>fixture</RequestId></ResponseMetadata></AssumeRoleResponse>";

#[tokio::test]
async fn a_role_is_assumed_with_the_stores_session_tag_and_external_id() {
    // GIVEN an AWS endpoint on loopback that records every request: AssumeRole gets a
    // session, anything else (the SendMessage after it) a 400.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorder = seen.clone();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for _ in 0..8 {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut requests = RequestReader::new();
                for _ in 0..8 {
                    let Ok(Some(request)) = requests.read(&mut stream).await else {
                        return;
                    };
                    let request = request.text();
                    let (status, body) = if request.contains("Action=AssumeRole") {
                        ("200 OK", ASSUMED)
                    } else {
                        ("400 Bad Request", "{\"__type\": \"InvalidAction\"}")
                    };
                    recorder.lock().expect("lock").push(request);
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let sdk = moto_config(&endpoint).await.expect("config");
    let i = integration(
        "https://sqs.us-east-1.amazonaws.com/123456789012/orders",
        SqsAuth::AssumeRole {
            role_arn: "arn:aws:iam::123456789012:role/herald-delivery-x".into(),
            external_id: "herald-0123456789abcdef".into(),
        },
    );

    // WHEN a job is delivered to the integration
    let _ = SqsDeliverer::new(sdk)
        .deliver(&i, sqs_config(&i), &job(&i, "o-1"), 1)
        .await;
    server.abort();

    // THEN the role was asked for with the external id and the store as a session tag
    let seen = seen.lock().expect("lock").clone();
    let assume = seen
        .iter()
        .find(|r| r.contains("Action=AssumeRole"))
        .unwrap_or_else(|| panic!("no AssumeRole among {seen:?}"));
    for part in [
        "RoleArn=arn%3Aaws%3Aiam%3A%3A123456789012%3Arole%2Fherald-delivery-x",
        "ExternalId=herald-0123456789abcdef",
        "Tags.member.1.Key=herald%3Astore",
        "Tags.member.1.Value=s",
    ] {
        assert!(assume.contains(part), "{part} not in {assume}");
    }
}

/// A moto server of the test's own with authentication on: the first `setup`
/// requests are allowed unauthenticated, every later one must be signed by a known
/// IAM user with permission.
struct AuthMoto {
    child: Child,
    endpoint: String,
}

impl Drop for AuthMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn auth_moto(setup: u32) -> AuthMoto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let moto = format!("{}/.venv/bin/moto_server", herald_testkit::checkout());
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", setup.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server from .venv (run `make setup`)");
    // Owned by the guard from here on, so it is killed whatever happens next.
    let moto = AuthMoto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return moto;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("moto with auth did not start within 10 s");
}

#[tokio::test]
async fn bad_credentials_and_missing_permissions_are_classified() {
    // Setup: create queue, create user, create access key (3 unauthenticated calls).
    let moto = auth_moto(3).await;
    let sdk = moto_config(&moto.endpoint).await.expect("moto");
    let (url, _) = queue(&sdk, false).await;
    let iam = aws_sdk_iam_free::create_user_with_key(&moto.endpoint).await;

    let deliverer = SqsDeliverer::new(sdk);
    let unknown = integration(&url, keys("AKIAUNKNOWNUNKNOWN00", "not-a-real-secret-key"));
    let result = deliverer
        .deliver(&unknown, sqs_config(&unknown), &job(&unknown, "o"), 1)
        .await;
    let detail = result.error_detail.expect("detail");
    assert!(detail.starts_with("invalid credentials"), "{detail}");

    let no_permission = integration(&url, keys(&iam.0, &iam.1));
    let result = deliverer
        .deliver(
            &no_permission,
            sqs_config(&no_permission),
            &job(&no_permission, "o"),
            1,
        )
        .await;
    let detail = result.error_detail.expect("detail");
    assert!(detail.starts_with("access denied"), "{detail}");
}

mod aws_sdk_iam_free {
    //! Creates an IAM user and access key on moto through its query API, without an
    //! IAM SDK dependency: two signed-by-nobody form posts (moto's setup allowance).

    pub async fn create_user_with_key(endpoint: &str) -> (String, String) {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let post = |form: Vec<(&'static str, &'static str)>| {
            let body = form
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&");
            client
                .post(format!("{endpoint}/"))
                .header("Authorization", "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0")
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
        };
        post(vec![
            ("Action", "CreateUser"),
            ("UserName", "no-permissions"),
            ("Version", "2010-05-08"),
        ])
        .await
        .expect("create user");
        let xml = post(vec![
            ("Action", "CreateAccessKey"),
            ("UserName", "no-permissions"),
            ("Version", "2010-05-08"),
        ])
        .await
        .expect("create key")
        .text()
        .await
        .expect("body");
        let field = |name: &str| {
            let open = format!("<{name}>");
            let start = xml
                .find(&open)
                .unwrap_or_else(|| panic!("no {name} in {xml}"))
                + open.len();
            let end = xml[start..].find('<').expect("close") + start;
            xml[start..end].to_owned()
        };
        (field("AccessKeyId"), field("SecretAccessKey"))
    }
}
