//! The AAP controller (AWX) REST client.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cloudkit_api::AapJobKind;
use cloudkit_provider::{CancelOutcome, ProviderError, Secret};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use url::Url;

use crate::config::{AapConfig, ConfigError, ENV_CA_FILE, ENV_URL};
use crate::model::{LaunchAnswer, Page, TemplateItem};
use crate::text;

pub use crate::model::AapJob;

/// Largest response body the client reads; a longer one is an error.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// How long to wait after a 429 answer that has no usable `Retry-After` header.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Upper bound on a `Retry-After` the client honours, so that a confused server cannot park
/// a job for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How many of a template's latest jobs [`AapClient::find_job_by_launch_key`] searches.
pub const LAUNCH_SEARCH_PAGE_SIZE: usize = 50;

/// Name of the extra variable that carries the launch key.
pub const LAUNCH_KEY_VAR: &str = "cloudkit_launch_key";

/// Longest error or job message the client produces, in bytes.
const MAX_MESSAGE_BYTES: usize = 512;

/// Which kind of template a name refers to: they live under different API paths and launch
/// different kinds of jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TemplateKind {
    /// `/v2/job_templates/`: launches a job.
    JobTemplate,
    /// `/v2/workflow_job_templates/`: launches a workflow job.
    WorkflowJobTemplate,
}

impl TemplateKind {
    /// The kind of job this kind of template launches.
    pub fn job_kind(self) -> AapJobKind {
        match self {
            TemplateKind::JobTemplate => AapJobKind::Job,
            TemplateKind::WorkflowJobTemplate => AapJobKind::WorkflowJob,
        }
    }

    /// The collection under `/v2/`.
    pub fn api_collection(self) -> &'static str {
        match self {
            TemplateKind::JobTemplate => "job_templates",
            TemplateKind::WorkflowJobTemplate => "workflow_job_templates",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            TemplateKind::JobTemplate => "job template",
            TemplateKind::WorkflowJobTemplate => "workflow job template",
        }
    }
}

/// A template found by name: its kind and numeric id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TemplateRef {
    /// Job template or workflow job template.
    pub kind: TemplateKind,
    /// The numeric id.
    pub id: u64,
}

/// The collection under `/v2/` that holds jobs of `kind`.
pub fn job_collection(kind: AapJobKind) -> &'static str {
    match kind {
        AapJobKind::Job => "jobs",
        AapJobKind::WorkflowJob => "workflow_jobs",
    }
}

fn describe_job_kind(kind: AapJobKind) -> &'static str {
    match kind {
        AapJobKind::Job => "job",
        AapJobKind::WorkflowJob => "workflow job",
    }
}

/// A job the controller accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaunchedJob {
    /// The numeric id.
    pub id: u64,
    /// Job or workflow job (from the template's kind).
    pub kind: AapJobKind,
    /// The status in the launch answer (usually `pending`); empty when it had none.
    pub status: String,
    /// The template it was launched from.
    pub template: TemplateRef,
}

/// An answer whose body has been read (within [`MAX_BODY_BYTES`]).
struct Answer {
    /// `METHOD /path`, for messages.
    what: String,
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// A client of the AAP controller REST API (AWX `/api/v2` or AAP 2.5+ `/api/controller/v2`).
///
/// Cheap to share: hold one per process (in an `Arc`) and use it from many tasks at once. Every
/// request carries `Authorization: Bearer <token>` and `Accept: application/json` and is bounded
/// by the configured timeout; bodies are read up to [`MAX_BODY_BYTES`]. Every failure is a
/// [`ProviderError`] with a short one-line message that never contains the token.
///
/// HTTP errors map to error kinds: 401/403 [`ProviderError::Auth`], 404
/// [`ProviderError::NotFound`], 405/409 [`ProviderError::NotAllowed`], 429
/// [`ProviderError::RateLimited`] (after `Retry-After` seconds, else [`DEFAULT_RETRY_AFTER`]),
/// 400/422 and redirects (which are not followed) [`ProviderError::Configuration`], 5xx and
/// anything else [`ProviderError::Transport`].
#[derive(Debug)]
pub struct AapClient {
    http: reqwest::Client,
    base: String,
    token: Secret,
    timeout: Duration,
    templates: Mutex<HashMap<String, TemplateRef>>,
}

impl AapClient {
    /// Builds the HTTP client (rustls with the platform roots, plus the configured CA bundle;
    /// no verification at all when `insecure_skip_verify` is set).
    pub fn new(config: &AapConfig) -> Result<Self, ConfigError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .connect_timeout(config.request_timeout())
            .user_agent(concat!("cloudkit-operator/", env!("CARGO_PKG_VERSION")))
            // A redirected POST turns into a GET, which on a launch URL answers the launch
            // form instead of launching: refuse redirects and say where they lead.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = config.ca_bundle_pem() {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                ConfigError::new(ENV_CA_FILE, format!("is not a valid PEM bundle: {e}"))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        if config.insecure_skip_verify() {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| {
            ConfigError::new(
                "AAP HTTP client",
                format!("cannot be built: {}", root_cause(&e)),
            )
        })?;
        Ok(AapClient {
            http,
            base: config.base_url().to_string(),
            token: config.token().clone(),
            timeout: config.request_timeout(),
            templates: Mutex::new(HashMap::new()),
        })
    }

    /// The API base URL the client appends `/v2/...` to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Finds a template by exact name: first among job templates, then among workflow job
    /// templates. The answer is cached for the life of the client (see
    /// [`AapClient::forget_template`]); "no such template" is a
    /// [`ProviderError::Configuration`], distinct from auth and transport errors.
    pub async fn find_template(&self, name: &str) -> Result<TemplateRef, ProviderError> {
        if let Some(found) = self.cached_template(name) {
            return Ok(found);
        }
        let found = self.lookup_template(name).await?;
        self.cache().insert(name.to_string(), found);
        Ok(found)
    }

    /// The cached template of `name`, if any.
    pub fn cached_template(&self, name: &str) -> Option<TemplateRef> {
        self.cache().get(name).copied()
    }

    /// Drops the cached template of `name` (it was deleted or recreated with another id).
    pub fn forget_template(&self, name: &str) {
        self.cache().remove(name);
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, TemplateRef>> {
        // A panic while holding the lock cannot leave the map half-updated: keep using it.
        self.templates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks a template up by exact name without the cache.
    pub async fn lookup_template(&self, name: &str) -> Result<TemplateRef, ProviderError> {
        for kind in [TemplateKind::JobTemplate, TemplateKind::WorkflowJobTemplate] {
            let url = self.url(&format!("{}/", kind.api_collection()))?;
            let answer = self
                .request(Method::GET, url, &[("name", name)], None)
                .await?;
            if answer.status == StatusCode::NOT_FOUND {
                // The collection itself is missing: the base URL points somewhere else.
                return Err(ProviderError::Configuration(self.clean(&format!(
                    "{}: AAP answered HTTP 404: check {ENV_URL} (https://host/api for AWX, \
                     https://gateway/api/controller for AAP 2.5 and later)",
                    answer.what
                ))));
            }
            let page: Page<TemplateItem> = self.parse_success(answer)?;
            if page.count == Some(0) {
                continue;
            }
            let mut exact = page
                .results
                .iter()
                .filter(|t| t.name.as_deref().is_none_or(|n| n == name));
            if let Some(first) = exact.next() {
                if exact.next().is_some() {
                    tracing::warn!(
                        template = name,
                        id = first.id,
                        "several AAP {}s have this name; using the first",
                        kind.describe()
                    );
                }
                return Ok(TemplateRef { kind, id: first.id });
            }
        }
        Err(ProviderError::Configuration(format!(
            "no job template or workflow job template named {:?} in AAP",
            text::truncate(name, 200)
        )))
    }

    /// Launches the template named `name` with `extra_vars`.
    ///
    /// The template is found through the cache; when the launch answers 404 (the template was
    /// deleted or recreated), the cache entry is dropped and the lookup and launch are retried
    /// once. See [`AapClient::launch`] for the rest.
    pub async fn launch_template(
        &self,
        name: &str,
        extra_vars: &Map<String, Value>,
    ) -> Result<LaunchedJob, ProviderError> {
        let template = self.find_template(name).await?;
        match self.launch_labelled(template, extra_vars, name).await {
            Err(ProviderError::NotFound(_)) => {
                self.forget_template(name);
                let template = self.find_template(name).await?;
                self.launch_labelled(template, extra_vars, name).await
            }
            other => other,
        }
    }

    /// Launches `template` by numeric id with `extra_vars`.
    ///
    /// When the answer lists the extra variables under `ignored_fields`, the template does not
    /// prompt for variables and the job would run without them: it is cancelled and the result
    /// is a [`ProviderError::Configuration`] asking for "Prompt on launch" on the template.
    pub async fn launch(
        &self,
        template: TemplateRef,
        extra_vars: &Map<String, Value>,
    ) -> Result<LaunchedJob, ProviderError> {
        let label = format!("{} {}", template.kind.describe(), template.id);
        self.launch_labelled(template, extra_vars, &label).await
    }

    async fn launch_labelled(
        &self,
        template: TemplateRef,
        extra_vars: &Map<String, Value>,
        label: &str,
    ) -> Result<LaunchedJob, ProviderError> {
        let url = self.url(&format!(
            "{}/{}/launch/",
            template.kind.api_collection(),
            template.id
        ))?;
        let body = serde_json::json!({ "extra_vars": extra_vars });
        let answer = self.request(Method::POST, url, &[], Some(&body)).await?;
        let launched: LaunchAnswer = self.parse_success(answer)?;
        let kind = template.kind.job_kind();
        let id = launched
            .id
            .or(match kind {
                AapJobKind::Job => launched.job,
                AapJobKind::WorkflowJob => launched.workflow_job,
            })
            .ok_or_else(|| {
                ProviderError::transport(format!(
                    "launch of {} answered without a job id",
                    text::truncate(label, 200)
                ))
            })?;
        if ignores_our_vars(launched.ignored_fields.as_ref(), extra_vars) {
            let cancelled = match self.cancel(kind, id).await {
                Ok(_) => "it was cancelled".to_string(),
                Err(e) => format!("cancelling it failed ({e})"),
            };
            return Err(ProviderError::Configuration(text::truncate(
                &format!(
                    "AAP {} {:?} ignored the extra variables of {} {id} ({cancelled}): enable \
                     \"Prompt on launch\" for variables on the template",
                    template.kind.describe(),
                    text::truncate(label, 200),
                    describe_job_kind(kind),
                ),
                MAX_MESSAGE_BYTES,
            )));
        }
        Ok(LaunchedJob {
            id,
            kind,
            status: launched.status.unwrap_or_default(),
            template,
        })
    }

    /// The job `id` of `kind`, from `/v2/jobs/<id>/` or `/v2/workflow_jobs/<id>/`. A job the
    /// controller no longer has is a [`ProviderError::NotFound`].
    pub async fn job(&self, kind: AapJobKind, id: u64) -> Result<AapJob, ProviderError> {
        let url = self.url(&format!("{}/{id}/", job_collection(kind)))?;
        let answer = self.request(Method::GET, url, &[], None).await?;
        self.parse_success(answer)
    }

    /// Asks the controller to cancel job `id` of `kind`: 202 (any 2xx) is
    /// [`CancelOutcome::Requested`]; 405 (no longer cancellable) and 404 (gone) are
    /// [`CancelOutcome::AlreadyFinished`].
    pub async fn cancel(&self, kind: AapJobKind, id: u64) -> Result<CancelOutcome, ProviderError> {
        let url = self.url(&format!("{}/{id}/cancel/", job_collection(kind)))?;
        let answer = self.request(Method::POST, url, &[], None).await?;
        match answer.status {
            s if s.is_success() => Ok(CancelOutcome::Requested),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_FOUND => {
                Ok(CancelOutcome::AlreadyFinished)
            }
            _ => Err(self.status_error(&answer)),
        }
    }

    /// Finds the job launched from `template` whose extra variables carry
    /// `cloudkit_launch_key: <launch_key>`.
    ///
    /// AWX does not reliably allow filtering jobs on the content of `extra_vars` (depending on
    /// the version the filter is refused or matches text loosely), so the client lists the
    /// template's latest [`LAUNCH_SEARCH_PAGE_SIZE`] jobs, newest first, and compares the key in
    /// each job's extra variables (a JSON string in AWX). A list item without `extra_vars` is
    /// looked up in the job's detail. The limit is deliberate: a lost launch is looked up
    /// seconds after it happened, when it is among the newest jobs of its template; an older
    /// launch is not searched for and the answer is `None`.
    pub async fn find_job_by_launch_key(
        &self,
        template: TemplateRef,
        launch_key: &str,
    ) -> Result<Option<AapJob>, ProviderError> {
        let kind = template.kind.job_kind();
        let url = self.url(&format!(
            "{}/{}/{}/",
            template.kind.api_collection(),
            template.id,
            job_collection(kind)
        ))?;
        let page_size = LAUNCH_SEARCH_PAGE_SIZE.to_string();
        let answer = self
            .request(
                Method::GET,
                url,
                &[("order_by", "-id"), ("page_size", page_size.as_str())],
                None,
            )
            .await?;
        let page: Page<AapJob> = self.parse_success(answer)?;
        for item in page.results {
            let job = if item.extra_vars.is_some() {
                item
            } else {
                match self.job(kind, item.id).await {
                    Ok(detail) => detail,
                    // Purged between the list and the detail: it cannot be ours any more.
                    Err(ProviderError::NotFound(_)) => continue,
                    Err(e) => return Err(e),
                }
            };
            if job
                .extra_var(LAUNCH_KEY_VAR)
                .as_ref()
                .and_then(Value::as_str)
                == Some(launch_key)
            {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    fn url(&self, rest: &str) -> Result<Url, ProviderError> {
        let text = format!("{}/v2/{rest}", self.base);
        Url::parse(&text)
            .map_err(|e| ProviderError::Configuration(format!("cannot build an AAP API URL: {e}")))
    }

    async fn request(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, ProviderError> {
        let what = format!("{method} {}", url.path());
        let origin = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => String::new(),
        };
        let mut builder = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose())
            .header(ACCEPT, "application/json");
        if !query.is_empty() {
            builder = builder.query(query);
        }
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let mut response = builder
            .send()
            .await
            .map_err(|e| self.transport_error(&what, &origin, e))?;
        let status = response.status();
        let headers = response.headers().clone();
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY_BYTES as u64)
        {
            return Err(self.too_large(&what));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&what, &origin, e))?
        {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(self.too_large(&what));
            }
            body.extend_from_slice(&chunk);
        }
        tracing::debug!(request = %what, status = status.as_u16(), bytes = body.len(), "AAP answered");
        Ok(Answer {
            what,
            status,
            headers,
            body,
        })
    }

    fn too_large(&self, what: &str) -> ProviderError {
        ProviderError::transport(format!(
            "{what}: answer larger than {} KiB",
            MAX_BODY_BYTES / 1024
        ))
    }

    fn transport_error(&self, what: &str, origin: &str, err: reqwest::Error) -> ProviderError {
        let err = err.without_url();
        let cause = self.clean(&root_cause(&err));
        let message = if err.is_timeout() {
            format!("{what}: no answer within {}", fmt_secs(self.timeout))
        } else if err.is_connect() {
            format!("{what}: cannot connect to AAP at {origin}: {cause}")
        } else {
            format!("{what}: connection failed: {cause}")
        };
        ProviderError::transport_from(self.clean(&message), err)
    }

    /// Parses a 2xx answer as `T`; any other status is mapped by [`AapClient::status_error`].
    fn parse_success<T: DeserializeOwned>(&self, answer: Answer) -> Result<T, ProviderError> {
        if !answer.status.is_success() {
            return Err(self.status_error(&answer));
        }
        let value: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            ProviderError::transport(self.clean(&format!(
                "{}: AAP answered HTTP {} with something that is not JSON: {}",
                answer.what,
                answer.status.as_u16(),
                text::describe_body(&answer.body, content_type(&answer.headers))
            )))
        })?;
        // Every answer the client reads is an object; serde would take an array for a struct.
        if !value.is_object() {
            return Err(ProviderError::transport(self.clean(&format!(
                "{}: unexpected answer from AAP: expected a JSON object, got {}",
                answer.what,
                text::describe_body(&answer.body, content_type(&answer.headers))
            ))));
        }
        serde_json::from_value(value).map_err(|e| {
            ProviderError::transport(
                self.clean(&format!("{}: unexpected answer from AAP: {e}", answer.what)),
            )
        })
    }

    /// Maps an unsuccessful status to the matching [`ProviderError`].
    fn status_error(&self, answer: &Answer) -> ProviderError {
        let status = answer.status;
        let detail = text::describe_body(&answer.body, content_type(&answer.headers));
        let message = self.clean(&format!(
            "{}: AAP answered HTTP {}: {detail}",
            answer.what,
            status.as_u16()
        ));
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Auth(message),
            StatusCode::NOT_FOUND => ProviderError::NotFound(message),
            StatusCode::METHOD_NOT_ALLOWED | StatusCode::CONFLICT => {
                ProviderError::NotAllowed(message)
            }
            StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
                retry_after: retry_after(&answer.headers),
            },
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => {
                ProviderError::Configuration(message)
            }
            s if s.is_redirection() => {
                let location = answer
                    .headers
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("nowhere");
                ProviderError::Configuration(self.clean(&format!(
                    "{}: AAP redirected (HTTP {}) to {}: set {ENV_URL} to the address the API \
                     is served at",
                    answer.what,
                    status.as_u16(),
                    text::truncate(location, 200)
                )))
            }
            _ => ProviderError::transport(message),
        }
    }

    /// `text` with every occurrence of the token replaced.
    pub(crate) fn redact(&self, text: &str) -> String {
        text::redact(text, self.token.expose())
    }

    /// One line, bounded, without the token.
    fn clean(&self, message: &str) -> String {
        text::truncate(
            &text::redact(&text::one_line(message), self.token.expose()),
            MAX_MESSAGE_BYTES,
        )
    }
}

/// Whether `ignored_fields` of a launch answer names `extra_vars` or one of our variables.
fn ignores_our_vars(ignored: Option<&Value>, extra_vars: &Map<String, Value>) -> bool {
    let ours = |name: &str| name == "extra_vars" || extra_vars.contains_key(name);
    match ignored {
        Some(Value::Object(fields)) => fields.keys().any(|k| ours(k)),
        Some(Value::Array(fields)) => fields.iter().filter_map(Value::as_str).any(ours),
        Some(Value::String(field)) => ours(field),
        _ => false,
    }
}

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.max(1)).min(MAX_RETRY_AFTER))
        .unwrap_or(DEFAULT_RETRY_AFTER)
}

fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
