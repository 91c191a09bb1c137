//! Amazon S3 as [`EventBodies`]: the stack's bucket of event payloads too large for a
//! queue message (the claim check). Ingest puts, the fan-out gets, the API presigns
//! a GET for a few minutes for whoever holds a `dataref` ([`crate::event_data`]); the
//! bucket encrypts (SSE-S3), is private, TLS only, and expires every body with the
//! delivery log (template.yaml).
//!
//! A missing key reads as `AccessDenied` (403), not `NoSuchKey`, to a caller without
//! `s3:ListBucket`, which neither the fan-out nor the API has: both come back as
//! `None`, a body that is no longer there. See
//! <https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html#API_GetObject_RequestSyntax>.

use async_trait::async_trait;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;

use super::backend_error;
use crate::error::{Error, Result};
use crate::ports::{BodyAt, EventBodies};

const SERVICE: &str = "S3";

/// The longest a presigned URL can be valid (SigV4's limit). A URL signed with
/// temporary credentials (a Lambda role's) stops working when they expire, sooner:
/// Herald presigns only for minutes, at the moment a `dataref` is followed.
pub const MAX_PRESIGNED: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Event bodies in one bucket (`HERALD_EVENT_BUCKET`).
#[derive(Clone, Debug)]
pub struct S3Bodies {
    client: Client,
    bucket: String,
}

impl S3Bodies {
    /// Uses `bucket` through a client built from the process-wide configuration. An
    /// endpoint set in it (moto) is addressed path-style, as such endpoints take it.
    /// Checksums are computed only where S3 requires them: TLS guards the transfer and
    /// the fan-out checks every body against its SHA-256.
    pub fn from_sdk(sdk: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let config = aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(sdk.endpoint_url().is_some())
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .build();
        Self {
            client: Client::from_conf(config),
            bucket: bucket.into(),
        }
    }

    /// Creates the bucket (moto: `make run-aws`, tests).
    pub async fn create_bucket(&self) -> Result<()> {
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }
}

#[async_trait]
impl EventBodies for S3Bodies {
    async fn put(&self, key: &str, body: bytes::Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if matches!(e.code(), Some("NoSuchKey" | "AccessDenied")) => return Ok(None),
            Err(e) => return Err(backend_error(SERVICE, e)),
        };
        let body = out.body.collect().await.map_err(|e| Error::Backend {
            service: SERVICE,
            message: format!("reading the body failed: {e}"),
            retryable: true,
        })?;
        Ok(Some(body.into_bytes()))
    }

    async fn open(&self, key: &str, valid: std::time::Duration) -> Result<Option<BodyAt>> {
        // HeadObject (allowed by s3:GetObject) tells a body that expired from one that
        // is there, so that a URL is handed out only for a body it will serve.
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e)
                if e.raw_response()
                    .is_some_and(|r| matches!(r.status().as_u16(), 403 | 404)) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(backend_error(SERVICE, e)),
        }
        let config = PresigningConfig::expires_in(valid.min(MAX_PRESIGNED))
            .map_err(|e| Error::Config(format!("presigning for {} s: {e}", valid.as_secs())))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| backend_error(SERVICE, e))?;
        Ok(Some(BodyAt::Url(request.uri().to_owned())))
    }
}
