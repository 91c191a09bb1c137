//! DynamoDB's `BatchWriteItem` for the delivery log, sent without the AWS SDK's
//! request pipeline.
//!
//! Every fan-out batch ends with one to a few `BatchWriteItem` requests. Through the
//! SDK, each costs a few hundred µs of CPU around its HTTP exchange (the orchestrator,
//! its interceptors, the serialiser and the signer: `make bench`, section `log`), more
//! than the items in it. This writer takes the items already in DynamoDB's JSON, signs
//! the request with the signer the SDK itself uses (`aws-sigv4`, the same settings),
//! and posts it with the fan-out's HTTP client ([`crate::net::client`]). The endpoint comes
//! from the SDK's own endpoint rules and overrides (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_DYNAMODB`, FIPS, dual-stack), resolved on the first write;
//! credentials from the process's provider chain, cached until five minutes before
//! they expire. Reads stay on the SDK.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_dynamodb::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use aws_sdk_dynamodb::config::{Credentials, ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use futures_util::{FutureExt, StreamExt};

use super::RETRYABLE_CODES;
use crate::error::{Error, Result};
use crate::json::json_string;
use crate::net::client::{Destination, Failure, HttpClient, Options, SystemResolver};

const SERVICE: &str = "DynamoDB";

/// DynamoDB's limit of items in one `BatchWriteItem`.
pub const ITEMS_PER_REQUEST: usize = 25;

/// Most requests of one write in flight at once.
pub const REQUESTS_IN_FLIGHT: usize = 8;

/// Rounds of one write: the first, then retries of what was left unprocessed or met a
/// retryable error, after 100, 200, 400 and 800 ms.
const ROUNDS: u32 = 5;

/// Expired credentials: fetched again, and the request retried.
const EXPIRED: &str = "ExpiredTokenException";

/// Writes items to one table with `BatchWriteItem`.
#[derive(Debug)]
pub struct BatchWriter {
    table: String,
    endpoint: EndpointInputs,
    credentials: Option<SharedCredentialsProvider>,
    /// The credentials in use, until near their expiry.
    cached: Mutex<Option<Credentials>>,
    /// The endpoint (URL, `Host`) and the HTTPS client, made on the first write: the
    /// client reads the system's trust store, which init should not pay for.
    ready: OnceLock<std::result::Result<Ready, String>>,
    attempt_timeout: Duration,
}

/// What the endpoint is resolved from.
#[derive(Debug)]
struct EndpointInputs {
    region: Option<String>,
    use_fips: Option<bool>,
    use_dual_stack: Option<bool>,
    endpoint_url: Option<String>,
}

#[derive(Debug)]
struct Ready {
    url: String,
    destination: Destination,
    client: HttpClient,
}

/// What one request came to.
enum Sent {
    /// Written; these items were handed back unprocessed.
    Done(Vec<Vec<u8>>),
    /// Not written, worth another round.
    Again(Vec<Vec<u8>>, String),
}

impl BatchWriter {
    /// A writer to `table` with the region, endpoint and credentials of `sdk`; each
    /// request gets `attempt_timeout`.
    pub fn from_sdk(sdk: &SdkConfig, table: impl Into<String>, attempt_timeout: Duration) -> Self {
        Self {
            table: table.into(),
            endpoint: EndpointInputs {
                region: sdk.region().map(|r| r.to_string()),
                use_fips: sdk.use_fips(),
                use_dual_stack: sdk.use_dual_stack(),
                endpoint_url: endpoint_override(sdk),
            },
            credentials: sdk.credentials_provider(),
            cached: Mutex::new(None),
            ready: OnceLock::new(),
            attempt_timeout,
        }
    }

    /// Writes `items` (each an item in DynamoDB's JSON, `{"pk":{"S":"…"},…}`), up to
    /// [`ITEMS_PER_REQUEST`] per request and [`REQUESTS_IN_FLIGHT`] requests at once,
    /// retrying what comes back unprocessed or meets a retryable error.
    pub async fn write(&self, mut items: Vec<Vec<u8>>) -> Result<()> {
        let mut last_error = String::new();
        for round in 0..ROUNDS {
            if items.is_empty() {
                return Ok(());
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(50 << round)).await;
            }
            let mut pending = items.into_iter();
            let chunks = std::iter::from_fn(|| {
                let chunk: Vec<Vec<u8>> = pending.by_ref().take(ITEMS_PER_REQUEST).collect();
                (!chunk.is_empty()).then_some(chunk)
            });
            let answers: Vec<Result<Sent>> = futures_util::stream::iter(chunks)
                .map(|chunk| self.send(chunk))
                .buffer_unordered(REQUESTS_IN_FLIGHT)
                .collect()
                .await;
            items = Vec::new();
            for answer in answers {
                match answer? {
                    Sent::Done(left) => items.extend(left),
                    Sent::Again(chunk, why) => {
                        items.extend(chunk);
                        last_error = why;
                    }
                }
            }
        }
        if items.is_empty() {
            return Ok(());
        }
        Err(Error::Backend {
            service: SERVICE,
            message: if last_error.is_empty() {
                format!("{} items were left unprocessed", items.len())
            } else {
                format!("{} items were not written: {last_error}", items.len())
            },
            retryable: true,
        })
    }

    /// One `BatchWriteItem` of `chunk`.
    async fn send(&self, chunk: Vec<Vec<u8>>) -> Result<Sent> {
        let ready = self.ready()?;
        let body = request_body(&self.table, &chunk);
        let credentials = match self.credentials().await {
            Ok(c) => c,
            Err(e) if e.is_retryable() => return Ok(Sent::Again(chunk, e.to_string())),
            Err(e) => return Err(e),
        };
        let region = self.endpoint.region.as_deref().unwrap_or_default();
        let headers = [
            ("host", ready.destination.authority()),
            ("content-type", "application/x-amz-json-1.0"),
            ("x-amz-target", "DynamoDB_20120810.BatchWriteItem"),
        ];
        let signed = sign_headers(
            &ready.url,
            &headers,
            &body,
            &credentials,
            region,
            "dynamodb",
            SystemTime::now(),
        )
        .map_err(|e| Error::Config(format!("signing a DynamoDB request: {e}")))?;
        let mut request_headers = http::HeaderMap::with_capacity(headers.len() + signed.len());
        // The client writes `host` itself, from the URI.
        let unsigned = headers.iter().filter(|(name, _)| *name != "host");
        let signed = signed.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        for (name, value) in unsigned.copied().chain(signed) {
            let name = http::HeaderName::from_bytes(name.as_bytes());
            let value = http::HeaderValue::from_str(value);
            let (Ok(name), Ok(value)) = (name, value) else {
                return Err(Error::Config(
                    "a DynamoDB request header is not valid".into(),
                ));
            };
            request_headers.insert(name, value);
        }
        let sent = ready
            .client
            .post(
                &ready.destination,
                request_headers,
                body.into(),
                self.attempt_timeout,
                usize::MAX,
            )
            .await;
        let answer = match sent {
            Ok(a) => a,
            Err(failure) => {
                let why = match failure {
                    Failure::Timeout => format!("no answer within {:?}", self.attempt_timeout),
                    Failure::Connect(_) => "could not connect".to_owned(),
                    Failure::Exchange(_) => "the request failed before an answer".to_owned(),
                };
                return Ok(Sent::Again(chunk, why));
            }
        };
        if !answer.complete {
            return Ok(Sent::Again(chunk, "the answer was cut off".into()));
        }
        let status = answer.status;
        let error_type = answer
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = answer.body;
        if status.is_success() {
            return unprocessed(&self.table, &answer).map(Sent::Done);
        }
        let (code, message) = error_of(error_type.as_deref(), &answer);
        if code == EXPIRED {
            *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        let why = format!("{code}: {message}");
        if status.is_server_error() || code == EXPIRED || RETRYABLE_CODES.contains(&code.as_str()) {
            return Ok(Sent::Again(chunk, why));
        }
        Err(Error::Backend {
            service: SERVICE,
            message: why,
            retryable: false,
        })
    }

    /// The endpoint and the client, made on first use.
    fn ready(&self) -> Result<&Ready> {
        self.ready
            .get_or_init(|| {
                let url = resolve_endpoint(&self.endpoint)?;
                let parsed = url::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
                let client = HttpClient::new(Options {
                    connect_timeout: self.attempt_timeout,
                    idle_timeout: Duration::from_secs(60),
                    resolver: std::sync::Arc::new(SystemResolver),
                    extra_roots: Vec::new(),
                })
                .map_err(|e| format!("building the DynamoDB client: {e}"))?;
                let destination = client
                    .destination(&parsed)
                    .map_err(|e| format!("{url}: {e}"))?;
                Ok(Ready {
                    url,
                    destination,
                    client,
                })
            })
            .as_ref()
            .map_err(|e| Error::Config(e.clone()))
    }

    /// The credentials to sign with: the cached ones, unless they expire within five
    /// minutes.
    async fn credentials(&self) -> Result<Credentials> {
        let fresh = |c: &Credentials| {
            c.expiry()
                .is_none_or(|at| at > SystemTime::now() + Duration::from_secs(300))
        };
        if let Some(c) = self
            .cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .filter(|c| fresh(c))
        {
            return Ok(c.clone());
        }
        let provider = self
            .credentials
            .as_ref()
            .ok_or_else(|| Error::Config("no AWS credentials provider is configured".into()))?;
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| Error::Backend {
                service: SERVICE,
                message: format!(
                    "no credentials: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                ),
                retryable: true,
            })?;
        *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(credentials.clone());
        Ok(credentials)
    }
}

/// The endpoint URL override for DynamoDB, as the SDK picks it: one set in code,
/// else `AWS_ENDPOINT_URL_DYNAMODB` (or the profile's), else `AWS_ENDPOINT_URL`.
fn endpoint_override(sdk: &SdkConfig) -> Option<String> {
    if sdk.get_origin("endpoint_url").is_client_config() {
        return sdk.endpoint_url().map(str::to_owned);
    }
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("DynamoDB")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build()
        .ok();
    sdk.service_config()
        .zip(key)
        .and_then(|(config, key)| config.load_config(key))
        .or_else(|| sdk.endpoint_url().map(str::to_owned))
}

/// The endpoint by the SDK's rules for DynamoDB.
fn resolve_endpoint(inputs: &EndpointInputs) -> std::result::Result<String, String> {
    let params = Params::builder()
        .set_region(inputs.region.clone())
        .set_use_fips(inputs.use_fips)
        .set_use_dual_stack(inputs.use_dual_stack)
        .set_endpoint(inputs.endpoint_url.clone())
        .build()
        .map_err(|e| format!("DynamoDB endpoint: {e}"))?;
    let resolver = DefaultResolver::new();
    // The rules are evaluated at once; the future is ready when first polled.
    let endpoint = resolver
        .resolve_endpoint(&params)
        .now_or_never()
        .ok_or("DynamoDB endpoint: the resolver did not answer at once")?
        .map_err(|e| format!("DynamoDB endpoint: {e}"))?;
    Ok(endpoint.url().to_owned())
}

/// The headers that sign a `POST` of `body` to `url` (`headers` are the others that
/// are sent, `host` among them): `x-amz-date`, `authorization` and, with temporary
/// credentials, `x-amz-security-token`. SigV4 with the SDK's default settings: the
/// payload's hash in the canonical request, no `x-amz-content-sha256` header.
pub fn sign_headers(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    at: SystemTime,
) -> std::result::Result<Vec<(String, String)>, String> {
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        "POST",
        url,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect())
}

/// `BatchWriteItem`'s body: `items` as puts into `table`.
pub fn request_body(table: &str, items: &[Vec<u8>]) -> Vec<u8> {
    let size: usize = items.iter().map(|i| i.len() + 32).sum();
    let mut body = Vec::with_capacity(size + table.len() + 32);
    body.extend_from_slice(b"{\"RequestItems\":{");
    json_string(&mut body, table);
    body.extend_from_slice(b":[");
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"PutRequest\":{\"Item\":");
        body.extend_from_slice(item);
        body.extend_from_slice(b"}}");
    }
    body.extend_from_slice(b"]}}");
    body
}

/// The items of a successful answer handed back unprocessed.
fn unprocessed(table: &str, answer: &[u8]) -> Result<Vec<Vec<u8>>> {
    let corrupt = || Error::Backend {
        service: SERVICE,
        message: "BatchWriteItem answered with something other than its JSON".into(),
        retryable: true,
    };
    let value: serde_json::Value = serde_json::from_slice(answer).map_err(|_| corrupt())?;
    let Some(left) = value
        .get("UnprocessedItems")
        .and_then(|u| u.get(table))
        .and_then(|t| t.as_array())
    else {
        return Ok(Vec::new());
    };
    left.iter()
        .map(|request| {
            let item = request
                .get("PutRequest")
                .and_then(|p| p.get("Item"))
                .ok_or_else(corrupt)?;
            serde_json::to_vec(item).map_err(|_| corrupt())
        })
        .collect()
}

/// The code (without its namespace) and message of an error answer: DynamoDB's JSON
/// (`__type`, `message`), else the `x-amzn-errortype` header, else an XML error
/// (`<Code>`, `<Message>`, as a proxy or an emulator may answer).
fn error_of(error_type: Option<&str>, answer: &[u8]) -> (String, String) {
    let value: serde_json::Value = serde_json::from_slice(answer).unwrap_or_default();
    let text = |key: &str| value.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let body = String::from_utf8_lossy(answer);
    let xml = |tag: &str| {
        body.split_once(&format!("<{tag}>"))
            .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
            .map(|(v, _)| v.chars().take(300).collect::<String>())
    };
    let code = text("__type")
        .or_else(|| text("code"))
        .or_else(|| error_type.map(str::to_owned))
        .or_else(|| xml("Code"))
        .map(|t| {
            let t = t.split(':').next().unwrap_or_default();
            t.rsplit('#').next().unwrap_or_default().to_owned()
        })
        .unwrap_or_else(|| "UnknownError".into());
    let message = text("message")
        .or_else(|| text("Message"))
        .or_else(|| xml("Message"))
        .unwrap_or_else(|| "no message".into());
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_the_items_as_puts_into_the_table() {
        let body = request_body("t\"1", &[br#"{"pk":{"S":"a"}}"#.to_vec(), b"{}".to_vec()]);
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"RequestItems": {"t\"1": [
                {"PutRequest": {"Item": {"pk": {"S": "a"}}}},
                {"PutRequest": {"Item": {}}},
            ]}})
        );
    }

    #[test]
    fn unprocessed_items_are_read_back_as_items() {
        let answer = br#"{"UnprocessedItems":{"t":[{"PutRequest":{"Item":{"pk":{"S":"a"}}}}]}}"#;
        assert_eq!(
            unprocessed("t", answer).expect("parsed"),
            vec![br#"{"pk":{"S":"a"}}"#.to_vec()]
        );
        assert!(unprocessed("t", br#"{"UnprocessedItems":{}}"#)
            .expect("parsed")
            .is_empty());
        assert!(unprocessed("t", b"<html>").is_err());
    }

    #[test]
    fn an_error_answer_names_its_code_without_the_namespace() {
        let answer = br#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#;
        assert_eq!(
            error_of(None, answer),
            ("ThrottlingException".to_owned(), "slow down".to_owned())
        );
        assert_eq!(
            error_of(
                Some("ProvisionedThroughputExceededException:http://internal.amazon.com/"),
                b"{}"
            )
            .0,
            "ProvisionedThroughputExceededException"
        );
        let xml = b"<ErrorResponse><Errors><Error><Code>SignatureDoesNotMatch</Code><Message>no match</Message></Error></Errors></ErrorResponse>";
        assert_eq!(
            error_of(None, xml),
            ("SignatureDoesNotMatch".to_owned(), "no match".to_owned())
        );
        assert_eq!(error_of(None, b"").0, "UnknownError");
    }

    /// AWS's SigV4 test suite (`aws-signing-test-suite/v4`, shipped with aws-sigv4):
    /// its example credentials are made for this test.
    fn suite_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test-suite",
        )
    }

    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160) // 2015-08-30T12:36:00Z
    }

    /// The headers that sign the suite's `POST /` to example.amazonaws.com.
    fn suite_signed(token: Option<&str>) -> Vec<(String, String)> {
        sign_headers(
            "https://example.amazonaws.com/",
            &[("host", "example.amazonaws.com")],
            b"",
            &suite_credentials(token),
            "us-east-1",
            "service",
            suite_time(),
        )
        .expect("signed")
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn signing_matches_the_aws_test_suites_post_vanilla() {
        let headers = suite_signed(None);
        assert_eq!(header(&headers, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            header(&headers, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b")
        );
        assert_eq!(header(&headers, "x-amz-security-token"), None);
    }

    #[test]
    fn temporary_credentials_sign_their_session_token_too() {
        let token = "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267";
        let headers = suite_signed(Some(token));
        assert_eq!(header(&headers, "x-amz-security-token"), Some(token));
        let authorization = header(&headers, "authorization").expect("authorization");
        assert!(
            authorization.contains("SignedHeaders=host;x-amz-date;x-amz-security-token,"),
            "{authorization}"
        );
    }

    #[test]
    fn the_endpoint_follows_the_sdks_rules_and_overrides() {
        let inputs = |region: &str, fips: bool, url: Option<&str>| EndpointInputs {
            region: Some(region.into()),
            use_fips: Some(fips),
            use_dual_stack: Some(false),
            endpoint_url: url.map(str::to_owned),
        };
        assert_eq!(
            resolve_endpoint(&inputs("eu-west-1", false, None)).expect("endpoint"),
            "https://dynamodb.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            resolve_endpoint(&inputs("cn-north-1", false, None)).expect("endpoint"),
            "https://dynamodb.cn-north-1.amazonaws.com.cn"
        );
        assert_eq!(
            resolve_endpoint(&inputs("us-east-1", true, None)).expect("endpoint"),
            "https://dynamodb-fips.us-east-1.amazonaws.com"
        );
        assert_eq!(
            resolve_endpoint(&inputs("us-east-1", false, Some("http://127.0.0.1:5055")))
                .expect("endpoint"),
            "http://127.0.0.1:5055"
        );
    }
}
