//! The integration use cases behind the API: create, read, list, update, delete,
//! and the `integration.*` events their changes fire. Transport-free: the router
//! turns these outcomes into HTTP.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::error::Result;
use crate::ingest::{EventStatus, Ingest};
use crate::model::{
    Health, Integration, IntegrationType, RetiringSecret, Secret, SqsAuth, StoreId, Target,
};
use crate::net::guard::AddressGuard;
use crate::ports::{InsertOutcome, IntegrationStore, ReplaceOutcome};
use crate::validate::{self, Draft, FieldError, Policy};

/// Why a request was refused (an expected outcome, not an error).
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The body has these problems.
    Invalid(Vec<FieldError>),
    /// No such integration in this store.
    NotFound,
    /// The store holds its maximum number of integrations.
    LimitReached {
        /// The maximum.
        max: usize,
    },
    /// Concurrent writers kept changing the integration; the caller may retry.
    Conflict,
    /// Only a webhook has a secret to rotate; this integration is of another type.
    NotAWebhook(IntegrationType),
}

/// A change made to an integration, which Herald announces to the store's
/// integrations as an `integration.*` event (Elastic Path lists them as observable).
#[derive(Clone, Copy, Debug)]
pub enum Change<'a> {
    /// `integration.created`: the integration as created.
    Created(&'a Integration),
    /// `integration.updated`: the integration as updated.
    Updated(&'a Integration),
    /// `integration.deleted`: the id of the integration deleted.
    Deleted(Uuid),
}

impl Change<'_> {
    /// The event key.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Created(_) => "integration.created",
            Self::Updated(_) => "integration.updated",
            Self::Deleted(_) => "integration.deleted",
        }
    }
}

/// Why a use case did not do what was asked: it refused (an expected outcome the caller
/// answers with a 4xx) or it failed (the infrastructure did).
#[derive(Debug)]
pub enum Failure {
    /// Refused, and why.
    Refused(Rejection),
    /// Failed.
    Failed(crate::Error),
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Self {
        Self::Refused(r)
    }
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Self {
        Self::Failed(e)
    }
}

/// What an update did: the integration as it is now, and whether it changed.
#[derive(Debug)]
pub struct Updated {
    /// The integration after the update.
    pub integration: Integration,
    /// Whether anything was written (an update with nothing to change writes nothing).
    pub changed: bool,
}

/// What a secret rotation did.
#[derive(Debug)]
pub struct Rotated {
    /// The integration after the rotation (its new secret is in its target).
    pub integration: Integration,
    /// The secret Herald generated, when the request named none: shown to the caller
    /// once, in the rotation's answer, and nowhere else.
    pub generated: Option<Secret>,
}

/// A use-case result: the value, or why there is none.
pub type Outcome<T> = std::result::Result<T, Failure>;

/// How many times an update re-reads and re-applies itself after losing a race.
const UPDATE_ATTEMPTS: usize = 5;

/// Manages the integrations of any store through an [`IntegrationStore`].
#[derive(Clone)]
pub struct Integrations {
    store: Arc<dyn IntegrationStore>,
    policy: Policy,
    max_per_store: usize,
    guard: AddressGuard,
    events: Option<Arc<Ingest>>,
}

impl Integrations {
    /// Elastic Path's limit of integrations per store.
    pub const DEFAULT_MAX_PER_STORE: usize = 100;

    /// Use cases over `store`, validating with `policy`, allowing `max_per_store`.
    pub fn new(store: Arc<dyn IntegrationStore>, policy: Policy, max_per_store: usize) -> Self {
        Self {
            store,
            policy,
            max_per_store,
            guard: AddressGuard::strict(),
            events: None,
        }
    }

    /// Announces every change made through [`Integrations::announce`] as an
    /// `integration.*` event, through `ingest`: the same path as any event, so the
    /// store's enabled integrations observing it get a job.
    pub fn announcing(mut self, ingest: Arc<Ingest>) -> Self {
        self.events = Some(ingest);
        self
    }

    /// Fires the `integration.*` event of `change` to `store`'s integrations. The
    /// payload's `data` is the integration as the API shows it (secrets masked, links
    /// from `links_base`); for a deletion only `{"id", "type"}`. Never fails: the
    /// change is made already, so an event that cannot be queued (after ingest's own
    /// rounds of retries) is logged at ERROR and lost. Without
    /// [`Integrations::announcing`], does nothing.
    pub async fn announce(&self, store: &StoreId, change: Change<'_>, links_base: &str) {
        let Some(ingest) = &self.events else {
            return;
        };
        let (data, occurred_at) = match change {
            Change::Created(i) => (i.to_resource(links_base), i.created_at),
            Change::Updated(i) => (i.to_resource(links_base), i.updated_at),
            Change::Deleted(id) => (
                json!({ "id": id.to_string(), "type": "integration" }),
                Utc::now(),
            ),
        };
        let event = json!({
            "id": Uuid::new_v4().to_string(),
            "type": change.kind(),
            "occurred_at": crate::job::rfc3339_ms(&occurred_at),
            "payload": { "data": data },
        });
        match &ingest.emit(store, &event).await.status {
            EventStatus::Accepted { jobs } => {
                tracing::debug!(store = %store, event = change.kind(), jobs, "integration event queued");
            }
            other => {
                tracing::error!(store = %store, event = change.kind(), outcome = ?other, "the integration event could not be queued; the change itself was made");
            }
        }
    }

    /// Refuses, at registration, targets whose host is an internal IP literal that
    /// `guard` (the deployment's `HERALD_ALLOW_PRIVATE_CIDRS`) does not admit. Names
    /// are checked when they are resolved, at every delivery.
    pub fn with_guard(mut self, guard: AddressGuard) -> Self {
        self.guard = guard;
        self
    }

    /// The registration-time SSRF check of a target's hosts.
    fn internal_hosts(&self, target: &Target) -> Vec<FieldError> {
        let check = |raw: &str, pointer: String| -> Option<FieldError> {
            // STOMP schemes are not "special" URL schemes, so their hosts are not
            // parsed as addresses: read the host again as an http URL's, which
            // normalises every IPv4 form (127.1, 2130706433, 0x7f.1, ...).
            let host = url::Url::parse(raw).ok()?.host_str()?.to_owned();
            let url = url::Url::parse(&format!("http://{host}/")).ok()?;
            let ip: std::net::IpAddr = match url.host()? {
                url::Host::Ipv4(v4) => v4.into(),
                url::Host::Ipv6(v6) => v6.into(),
                url::Host::Domain(_) => return None,
            };
            let refused = self.guard.check(ip).err()?;
            Some(FieldError {
                pointer,
                detail: refused.to_string(),
            })
        };
        match target {
            Target::Webhook(c) => check(&c.url, "/data/configuration/url".into())
                .into_iter()
                .collect(),
            Target::Stomp(c) => c
                .addresses
                .iter()
                .enumerate()
                .filter_map(|(i, a)| check(a, format!("/data/configuration/addresses/{i}")))
                .collect(),
            Target::AwsSqs(_) | Target::AwsEventBridge(_) | Target::AwsSns(_) => Vec::new(),
        }
    }

    /// The store's external id for keyless delivery to AWS targets (SQS, EventBridge,
    /// SNS), issued on first request.
    pub async fn external_id(&self, store_id: &StoreId) -> Result<String> {
        self.store.external_id(store_id).await
    }

    /// Binds a keyless AWS target to the external id Herald issued to the store: a
    /// request may leave `external_id` out (Herald fills it in) or send the issued
    /// one; any other value is refused, so no store can borrow another's.
    async fn bind_external_id(
        &self,
        store_id: &StoreId,
        target: &mut Target,
        body: &Value,
    ) -> Result<Vec<FieldError>> {
        let Some(SqsAuth::AssumeRole { external_id, .. }) = target.aws_auth_mut() else {
            return Ok(Vec::new());
        };
        let issued = self.store.external_id(store_id).await?;
        if let Some(sent) = body.pointer("/data/configuration/external_id") {
            if sent.as_str() != Some(issued.as_str()) && !sent.is_null() {
                return Ok(vec![FieldError {
                    pointer: "/data/configuration/external_id".into(),
                    detail: format!(
                        "must be {issued}, the external id Herald issued to this store (GET /v2/integrations/external-id), or left out"
                    ),
                }]);
            }
        }
        *external_id = issued;
        Ok(Vec::new())
    }

    /// Creates an integration from a request body.
    pub async fn create(&self, store_id: &StoreId, body: &Value) -> Outcome<Integration> {
        let mut draft = match validate::parse_create(body, self.policy) {
            Ok(d) => d,
            Err(errors) => return Err(Rejection::Invalid(errors).into()),
        };
        let refused = self.internal_hosts(&draft.target);
        if !refused.is_empty() {
            return Err(Rejection::Invalid(refused).into());
        }
        let refused = self
            .bind_external_id(store_id, &mut draft.target, body)
            .await?;
        if !refused.is_empty() {
            return Err(Rejection::Invalid(refused).into());
        }
        let now = Utc::now();
        let integration = Integration {
            id: Uuid::now_v7(),
            store_id: store_id.clone(),
            name: draft.name,
            description: draft.description,
            enabled: draft.enabled,
            observes: draft.observes,
            target: draft.target,
            created_at: now,
            updated_at: now,
            version: 1,
            health: Default::default(),
            delivery: draft.delivery,
        };
        match self.store.insert(&integration, self.max_per_store).await? {
            InsertOutcome::Inserted => Ok(integration),
            InsertOutcome::LimitReached => Err(Rejection::LimitReached {
                max: self.max_per_store,
            }
            .into()),
        }
    }

    /// One integration of the store.
    pub async fn get(&self, store_id: &StoreId, id: Uuid) -> Outcome<Integration> {
        Ok(self
            .store
            .get(store_id, id)
            .await?
            .ok_or(Rejection::NotFound)?)
    }

    /// A page of the store's integrations (oldest first) and the total count.
    pub async fn list(
        &self,
        store_id: &StoreId,
        page: crate::page::Page,
    ) -> Result<(Vec<Integration>, usize)> {
        let all = self.store.list(store_id).await?;
        let total = all.len();
        Ok((page.slice(all), total))
    }

    /// Applies a partial update; re-reads and re-applies it if a concurrent writer
    /// got there first, so no write is lost and a deleted integration stays deleted.
    pub async fn update(&self, store_id: &StoreId, id: Uuid, body: &Value) -> Outcome<Updated> {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(current) = self.store.get(store_id, id).await? else {
                return Err(Rejection::NotFound.into());
            };
            let draft = Draft {
                name: current.name.clone(),
                description: current.description.clone(),
                enabled: current.enabled,
                observes: current.observes.clone(),
                target: current.target.clone(),
                delivery: current.delivery,
            };
            let mut next = match validate::apply_update(&draft, body, self.policy) {
                Ok(d) => d,
                Err(errors) => return Err(Rejection::Invalid(errors).into()),
            };
            let refused = self.internal_hosts(&next.target);
            if !refused.is_empty() {
                return Err(Rejection::Invalid(refused).into());
            }
            let refused = self
                .bind_external_id(store_id, &mut next.target, body)
                .await?;
            if !refused.is_empty() {
                return Err(Rejection::Invalid(refused).into());
            }
            // Nothing to change (an empty attributes section, or the values it has):
            // nothing is written, as Elastic Path does not update then.
            if next == draft {
                return Ok(Updated {
                    integration: current,
                    changed: false,
                });
            }
            // Re-enabling starts the health count afresh (the last success is kept).
            let health = if !current.enabled && next.enabled {
                Health {
                    last_success_at: current.health.last_success_at,
                    ..Health::default()
                }
            } else {
                current.health.clone()
            };
            let updated = Integration {
                health,
                name: next.name,
                description: next.description,
                enabled: next.enabled,
                observes: next.observes,
                target: next.target,
                delivery: next.delivery,
                updated_at: Utc::now().max(current.updated_at),
                version: current.version + 1,
                ..current
            };
            match self.store.replace(&updated, current.version).await? {
                ReplaceOutcome::Replaced => {
                    return Ok(Updated {
                        integration: updated,
                        changed: true,
                    })
                }
                ReplaceOutcome::NotFound => return Err(Rejection::NotFound.into()),
                ReplaceOutcome::VersionConflict => continue,
            }
        }
        Err(Rejection::Conflict.into())
    }

    /// Rotates a webhook's secret (`POST /v2/integrations/{id}/rotate-secret`): the
    /// new secret (the body's, or a generated one) becomes the secret, and the one it
    /// replaces keeps signing deliveries for `overlap_minutes` beside it, so
    /// receivers switch at their pace. A rotation during another's overlap ends that
    /// one: only the secret being replaced keeps signing. Re-reads and re-applies
    /// itself after losing a race, as an update does.
    pub async fn rotate_secret(
        &self,
        store_id: &StoreId,
        id: Uuid,
        body: &Value,
    ) -> Outcome<Rotated> {
        let request = validate::parse_rotation(body).map_err(Rejection::Invalid)?;
        let generated = match &request.secret_key {
            Some(_) => None,
            None => Some(crate::secrets::generate_webhook_secret()?),
        };
        let Some(new_secret) = request.secret_key.clone().or_else(|| generated.clone()) else {
            unreachable!("a secret was sent or generated")
        };
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(current) = self.store.get(store_id, id).await? else {
                return Err(Rejection::NotFound.into());
            };
            let Target::Webhook(config) = &current.target else {
                return Err(Rejection::NotAWebhook(current.target.kind()).into());
            };
            if config.secret_key.as_ref() == Some(&new_secret) {
                return Err(Rejection::Invalid(vec![FieldError {
                    pointer: "/data/secret_key".into(),
                    detail: "is the current secret: a rotation needs a new one".into(),
                }])
                .into());
            }
            let now = Utc::now();
            let overlap = chrono::Duration::minutes(i64::from(request.overlap_minutes));
            let mut config = config.clone();
            config.retiring = config
                .secret_key
                .take()
                .filter(|_| request.overlap_minutes > 0)
                .map(|secret| RetiringSecret {
                    secret,
                    until: now + overlap,
                });
            config.secret_key = Some(new_secret.clone());
            let updated = Integration {
                target: Target::Webhook(config),
                updated_at: now.max(current.updated_at),
                version: current.version + 1,
                ..current.clone()
            };
            match self.store.replace(&updated, current.version).await? {
                ReplaceOutcome::Replaced => {
                    return Ok(Rotated {
                        integration: updated,
                        generated,
                    })
                }
                ReplaceOutcome::NotFound => return Err(Rejection::NotFound.into()),
                ReplaceOutcome::VersionConflict => continue,
            }
        }
        Err(Rejection::Conflict.into())
    }

    /// Deletes an integration.
    pub async fn delete(&self, store_id: &StoreId, id: Uuid) -> Outcome<()> {
        if self.store.delete(store_id, id).await? {
            Ok(())
        } else {
            Err(Rejection::NotFound.into())
        }
    }
}

/// Delivers a sample event of type `triggered_by` to an integration now, whatever its
/// `enabled` flag (testing is what people do before enabling), and records the attempt
/// like any other. Returns the recorded attempt.
pub async fn send_test(
    integration: &Integration,
    triggered_by: &str,
    deliverer: &dyn crate::ports::Deliverer,
    log: &dyn crate::ports::DeliveryLog,
) -> Result<crate::attempt::Attempt> {
    let now = Utc::now();
    let resource = triggered_by.split('.').next().unwrap_or("test");
    let sample_id = format!("test-{}", Uuid::new_v4().simple());
    let event = crate::job::Event {
        id: sample_id.clone(),
        kind: triggered_by.to_owned(),
        occurred_at: now,
        payload: json!({ "data": { "id": sample_id, "type": resource, "test": true } }).into(),
    };
    let job = crate::job::DeliveryJob::new(&integration.store_id, integration.id, event, now);
    let result = deliverer.deliver(integration, &job, 1).await;
    let status = if result.outcome == crate::attempt::Outcome::Delivered {
        crate::attempt::JobStatus::Delivered
    } else {
        crate::attempt::JobStatus::Discarded
    };
    let entry = crate::attempt::log_entry(&job, 1, status, &result);
    log.record(std::slice::from_ref(&entry)).await?;
    Ok(entry.attempt)
}
