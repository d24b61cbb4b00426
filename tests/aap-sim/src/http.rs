//! The HTTP surface: the AWX controller API under `/api/v2/` and `/api/controller/v2/`, and the
//! simulator's admin API under `/_sim/`.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::config::{Faults, TemplateKind, TemplateSpec};
use crate::jobs::{AwxStatus, Job};
use crate::serve::ConnKill;
use crate::state::{ApiError, RequestRecord, Shared, Template, lock, not_found};

type Sim = Arc<Shared>;

/// Both API prefixes: AWX's and AAP 2.5+ gateway's.
pub(crate) const PREFIXES: [&str; 2] = ["/api/v2/", "/api/controller/v2/"];

/// Job fields AWX's `UnifiedJobListSerializer` omits from list items.
const LIST_EXCLUDED_JOB_FIELDS: &[&str] = &[
    "job_args",
    "job_cwd",
    "job_env",
    "result_traceback",
    "event_processing_finished",
];

/// AWX's default and maximum page sizes.
const DEFAULT_PAGE_SIZE: usize = 25;
const MAX_PAGE_SIZE: usize = 200;

fn json_response(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, axum::Json(body)).into_response()
}

fn error_response((status, body): ApiError) -> Response {
    json_response(status, body)
}

fn result_response(r: Result<Value, ApiError>) -> Response {
    match r {
        Ok(v) => json_response(200, v),
        Err(e) => error_response(e),
    }
}

/// The API prefix (`/api/v2/` or `/api/controller/v2/`) the request came in on: related links
/// in answers use it.
struct Prefix(&'static str);

impl<S: Send + Sync> FromRequestParts<S> for Prefix {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Prefix(
            if parts.uri.path().starts_with("/api/controller/") {
                PREFIXES[1]
            } else {
                PREFIXES[0]
            },
        ))
    }
}

/// Query pairs in order.
struct Query(Vec<(String, String)>);

impl Query {
    fn from_raw(raw: Option<String>) -> Self {
        Query(
            raw.map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `page` and `page_size`, with AWX's defaults and limits.
    fn paging(&self) -> Result<(usize, usize), ApiError> {
        let invalid = || (404, json!({"detail": "Invalid page."}));
        let page = match self.get("page") {
            None => 1,
            Some(p) => p
                .parse::<usize>()
                .ok()
                .filter(|p| *p >= 1)
                .ok_or_else(invalid)?,
        };
        let size = match self.get("page_size") {
            None => DEFAULT_PAGE_SIZE,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|s| *s >= 1)
                .map_or(DEFAULT_PAGE_SIZE, |s| s.min(MAX_PAGE_SIZE)),
        };
        Ok((page, size))
    }

    /// The relative URL of another page of this listing.
    fn page_url(&self, path: &str, page: usize) -> String {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        let mut replaced = false;
        for (k, v) in &self.0 {
            if k == "page" {
                ser.append_pair("page", &page.to_string());
                replaced = true;
            } else {
                ser.append_pair(k, v);
            }
        }
        if !replaced {
            ser.append_pair("page", &page.to_string());
        }
        format!("{path}?{}", ser.finish())
    }
}

/// Cuts `items` into the requested page: `{count, next, previous, results}`.
fn paginate<T>(
    items: Vec<T>,
    query: &Query,
    path: &str,
    render: impl Fn(&T) -> Value,
) -> Result<Value, ApiError> {
    let (page, size) = query.paging()?;
    let count = items.len();
    let pages = count.div_ceil(size).max(1);
    if page > pages {
        return Err((404, json!({"detail": "Invalid page."})));
    }
    let start = (page - 1) * size;
    let results: Vec<Value> = items.iter().skip(start).take(size).map(render).collect();
    let next = (page < pages).then(|| query.page_url(path, page + 1));
    let previous = (page > 1).then(|| query.page_url(path, page - 1));
    Ok(json!({"count": count, "next": next, "previous": previous, "results": results}))
}

fn parse_id(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>().map_err(|_| not_found())
}

fn id_list(s: &str) -> Vec<u64> {
    s.split(',').filter_map(|p| p.trim().parse().ok()).collect()
}

/// Builds the whole router.
pub(crate) fn router(sim: Sim) -> Router {
    let mut api: Router<Sim> = Router::new()
        .route("/api/", get(api_root))
        .route("/api/controller/", get(api_root));
    for p in PREFIXES {
        api = api
            .route(p, get(v2_root))
            .route(&format!("{p}ping/"), get(ping))
            .route(&format!("{p}config/"), get(config))
            .route(&format!("{p}me/"), get(me))
            .route(&format!("{p}organizations/"), get(organizations))
            .route(
                &format!("{p}unified_job_templates/"),
                get(unified_templates),
            )
            .route(&format!("{p}unified_jobs/"), get(unified_jobs));
        for kind in TemplateKind::ALL {
            let t = kind.templates_path();
            let j = kind.jobs_path();
            api = api
                .route(
                    &format!("{p}{t}/"),
                    get(move |s: State<Sim>, pre: Prefix, q: RawQuery| {
                        list_templates(s, pre, q, kind)
                    }),
                )
                .route(
                    &format!("{p}{t}/{{id}}/"),
                    get(move |s: State<Sim>, pre: Prefix, id: Path<String>| {
                        get_template(s, pre, id, kind)
                    }),
                )
                .route(
                    &format!("{p}{t}/{{id}}/launch/"),
                    get(move |s: State<Sim>, id: Path<String>| launch_info(s, id, kind)).post(
                        move |s: State<Sim>, pre: Prefix, id: Path<String>, body: Bytes| {
                            launch(s, pre, id, body, kind)
                        },
                    ),
                )
                .route(
                    &format!("{p}{t}/{{id}}/{j}/"),
                    get(
                        move |s: State<Sim>,
                              pre: Prefix,
                              id: Path<String>,
                              q: RawQuery,
                              uri: axum::http::Uri| {
                            list_template_jobs(s, pre, id, q, uri, kind)
                        },
                    ),
                )
                .route(
                    &format!("{p}{j}/"),
                    get(
                        move |s: State<Sim>, pre: Prefix, q: RawQuery, uri: axum::http::Uri| {
                            list_jobs(s, pre, q, uri, kind)
                        },
                    ),
                )
                .route(
                    &format!("{p}{j}/{{id}}/"),
                    get(move |s: State<Sim>, pre: Prefix, id: Path<String>| {
                        get_job(s, pre, id, kind)
                    }),
                )
                .route(
                    &format!("{p}{j}/{{id}}/cancel/"),
                    get(move |s: State<Sim>, id: Path<String>| can_cancel(s, id, kind))
                        .post(move |s: State<Sim>, id: Path<String>| cancel(s, id, kind)),
                );
        }
        api = api.route(&format!("{p}jobs/{{id}}/stdout/"), get(stdout));
    }
    let api = api
        .fallback(api_fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&sim),
            api_middleware,
        ));

    let admin: Router<Sim> = Router::new()
        .route("/_sim/health", get(|| async { "ok" }))
        .route(
            "/_sim/requests",
            get(admin_requests).delete(admin_clear_requests),
        )
        .route("/_sim/stats", get(admin_stats))
        .route(
            "/_sim/faults",
            get(admin_faults)
                .put(admin_set_faults)
                .post(admin_set_faults),
        )
        .route(
            "/_sim/templates",
            get(admin_templates).post(admin_add_template),
        );

    api.merge(admin).with_state(sim)
}

/// Fault injection, authentication, product headers and the request log for `/api/...`.
async fn api_middleware(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let timestamp = sim.clock.format(start);
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let kill = req.extensions().get::<ConnKill>().cloned();
    let log = |status: u16, fault: Option<&str>| {
        sim.record(RequestRecord {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            status,
            timestamp: timestamp.clone(),
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            fault: fault.map(str::to_owned),
        });
    };

    let decision = sim.decide_faults(&path);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    let (mut response, fault) = if decision.reset {
        if let Some(kill) = &kill {
            log(0, Some("reset"));
            kill.reset();
            // The connection task drops this future together with the connection.
            std::future::pending::<()>().await;
        }
        (
            json_response(502, json!({"detail": "Simulated connection reset."})),
            Some("reset"),
        )
    } else if decision.unauthorized {
        (
            unauthorized("Authentication credentials were not provided."),
            Some("unauthorized"),
        )
    } else if let Some(status) = decision.error {
        (
            json_response(status, json!({"detail": "Simulated server error."})),
            Some("error"),
        )
    } else if let Err(msg) = authenticate(&sim, &req) {
        (unauthorized(msg), None)
    } else {
        (next.run(req).await, None)
    };
    if let (Some(stall), None, Some(kill)) = (decision.stall, fault, &kill) {
        // The request has been carried out; its answer is lost.
        log(response.status().as_u16(), Some("stall"));
        tokio::time::sleep(stall).await;
        kill.reset();
        std::future::pending::<()>().await;
    }
    let headers = response.headers_mut();
    headers.insert("x-api-product-name", HeaderValue::from_static("AWX"));
    if let Ok(v) = HeaderValue::from_str(&sim.awx_version) {
        headers.insert("x-api-product-version", v);
    }
    if let Some(f) = fault
        && let Ok(v) = HeaderValue::from_str(f)
    {
        headers.insert("x-sim-fault", v);
    }
    log(response.status().as_u16(), fault);
    response
}

fn unauthorized(detail: &str) -> Response {
    let mut r = json_response(401, json!({ "detail": detail }));
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"api\""),
    );
    r
}

/// Paths AWX serves without credentials.
fn is_public(path: &str) -> bool {
    matches!(path, "/api/" | "/api/controller/")
        || PREFIXES
            .iter()
            .any(|p| path == *p || path.strip_prefix(p) == Some("ping/"))
}

fn authenticate(sim: &Shared, req: &Request) -> Result<(), &'static str> {
    if sim.tokens.is_empty() || is_public(req.uri().path()) {
        return Ok(());
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .ok_or("Authentication credentials were not provided.")?;
    let token = header
        .strip_prefix("Bearer ")
        .ok_or("Authentication credentials were not provided.")?
        .trim();
    if sim.tokens.iter().any(|t| t == token) {
        Ok(())
    } else {
        Err("Invalid token.")
    }
}

async fn api_fallback(uri: axum::http::Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api") && !path.ends_with('/') {
        // Django's APPEND_SLASH, as AWX does it.
        let location = match uri.query() {
            Some(q) => format!("{path}/?{q}"),
            None => format!("{path}/"),
        };
        if let Ok(v) = HeaderValue::from_str(&location) {
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            r.headers_mut().insert(header::LOCATION, v);
            return r;
        }
    }
    error_response(not_found())
}

async fn method_not_allowed(method: Method) -> Response {
    json_response(
        405,
        json!({"detail": format!("Method \"{method}\" not allowed.")}),
    )
}

async fn api_root(uri: axum::http::Uri) -> Response {
    let v2 = if uri.path().starts_with("/api/controller/") {
        PREFIXES[1]
    } else {
        PREFIXES[0]
    };
    json_response(
        200,
        json!({
            "description": "AWX REST API",
            "current_version": v2,
            "available_versions": {"v2": v2},
            "oauth2": "/api/o/",
            "custom_logo": "",
            "custom_login_info": "",
            "login_redirect_override": "",
        }),
    )
}

async fn v2_root(Prefix(p): Prefix) -> Response {
    let mut links = Map::new();
    for name in [
        "ping",
        "config",
        "me",
        "organizations",
        "job_templates",
        "workflow_job_templates",
        "unified_job_templates",
        "jobs",
        "workflow_jobs",
        "unified_jobs",
    ] {
        links.insert(name.into(), format!("{p}{name}/").into());
    }
    json_response(200, Value::Object(links))
}

async fn ping(State(sim): State<Sim>) -> Response {
    json_response(
        200,
        json!({
            "ha": false,
            "version": sim.awx_version,
            "active_node": "aap-sim",
            "install_uuid": "00000000-0000-0000-0000-000000000000",
            "instances": [{"node": "aap-sim", "node_type": "hybrid", "uuid": "00000000-0000-0000-0000-000000000001",
                           "heartbeat": sim.clock.format(Instant::now()), "capacity": 100, "version": sim.awx_version}],
            "instance_groups": [{"name": "default", "capacity": 100, "instances": ["aap-sim"]}],
        }),
    )
}

async fn config(State(sim): State<Sim>) -> Response {
    json_response(
        200,
        json!({
            "time_zone": "UTC",
            "license_info": {"license_type": "open", "valid_key": true, "subscription_name": "OPEN", "product_name": "AWX"},
            "version": sim.awx_version,
            "eula": "",
            "analytics_status": "off",
            "analytics_collectors": {},
            "become_methods": [["sudo", "Sudo"]],
            "ui_next": false,
            "project_base_dir": "/var/lib/awx/projects/",
            "project_local_paths": [],
            "custom_virtualenvs": [],
        }),
    )
}

fn user(prefix: &str) -> Value {
    json!({
        "id": 1, "type": "user", "url": format!("{prefix}users/1/"), "username": "admin",
        "first_name": "", "last_name": "", "email": "", "is_superuser": true, "is_system_auditor": false,
    })
}

async fn me(Prefix(p): Prefix) -> Response {
    json_response(
        200,
        json!({"count": 1, "next": null, "previous": null, "results": [user(p)]}),
    )
}

async fn organizations(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    RawQuery(q): RawQuery,
    uri: axum::http::Uri,
) -> Response {
    let q = Query::from_raw(q);
    let mut names: Vec<String> = lock(&sim.inner)
        .templates
        .values()
        .map(|t| t.spec.organization.clone())
        .collect();
    names.push(crate::config::DEFAULT_ORGANIZATION.to_owned());
    names.sort();
    names.dedup();
    let orgs: Vec<(u64, String)> = names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (org_id(&n, i), n))
        .filter(|(id, n)| {
            q.get("name").is_none_or(|want| want == n)
                && q.get("id").is_none_or(|want| want == id.to_string())
        })
        .collect();
    result_response(paginate(
        orgs,
        &q,
        uri.path(),
        |(id, n)| json!({"id": id, "type": "organization", "url": format!("{p}organizations/{id}/"), "name": n, "description": ""}),
    ))
}

/// The default organization is 1, as in AWX; others are numbered after it.
fn org_id(name: &str, index: usize) -> u64 {
    if name == crate::config::DEFAULT_ORGANIZATION {
        1
    } else {
        index as u64 + 2
    }
}

fn render_template(t: &Template, prefix: &str, sim: &Shared) -> Value {
    let kind = t.spec.kind;
    let url = format!("{prefix}{}/{}/", kind.templates_path(), t.id);
    let created = sim.clock.format(t.created);
    let mut v = json!({
        "id": t.id,
        "type": kind.template_type(),
        "url": url,
        "related": {
            "launch": format!("{url}launch/"),
            kind.jobs_path(): format!("{url}{}/", kind.jobs_path()),
            "organization": format!("{prefix}organizations/1/"),
            "labels": format!("{url}labels/"),
            "survey_spec": format!("{url}survey_spec/"),
        },
        "summary_fields": {
            "organization": {"id": 1, "name": t.spec.organization, "description": ""},
            "user_capabilities": {"edit": true, "delete": true, "start": true, "schedule": true, "copy": true},
            "labels": {"count": 0, "results": []},
        },
        "created": created,
        "modified": created,
        "name": t.spec.name,
        "description": t.spec.description,
        "organization": 1,
        "extra_vars": "",
        "survey_enabled": false,
        "allow_simultaneous": true,
        "last_job_run": null,
        "last_job_failed": false,
        "next_job_run": null,
        "status": "never updated",
        "ask_variables_on_launch": t.spec.ask_variables_on_launch,
        "ask_inventory_on_launch": false,
        "ask_limit_on_launch": false,
        "ask_scm_branch_on_launch": false,
        "ask_labels_on_launch": false,
        "ask_tags_on_launch": false,
        "ask_skip_tags_on_launch": false,
        "webhook_service": "",
        "webhook_credential": null,
    });
    if kind == TemplateKind::Job
        && let Some(obj) = v.as_object_mut()
    {
        for (k, val) in [
            ("job_type", json!("run")),
            ("inventory", json!(1)),
            ("project", json!(1)),
            (
                "playbook",
                json!(crate::runner::playbook_name(t.spec.runner.as_ref())),
            ),
            ("scm_branch", json!("")),
            ("forks", json!(0)),
            ("limit", json!("")),
            ("verbosity", json!(0)),
            ("job_tags", json!("")),
            ("skip_tags", json!("")),
            ("timeout", json!(0)),
            ("become_enabled", json!(false)),
            ("diff_mode", json!(false)),
            ("job_slice_count", json!(1)),
            ("execution_environment", json!(null)),
        ] {
            obj.insert(k.into(), val);
        }
        for ask in [
            "ask_diff_mode_on_launch",
            "ask_job_type_on_launch",
            "ask_verbosity_on_launch",
            "ask_credential_on_launch",
            "ask_execution_environment_on_launch",
            "ask_forks_on_launch",
            "ask_job_slice_count_on_launch",
            "ask_timeout_on_launch",
            "ask_instance_groups_on_launch",
        ] {
            obj.insert(ask.into(), json!(false));
        }
    }
    v
}

/// Template filters: `name`, `name__icontains`, `id`, `or__id`/`or__name`, `organization`,
/// `type`; ordering `id`, `-id`, `name`, `-name`.
fn filter_templates(sim: &Shared, q: &Query, kind: Option<TemplateKind>) -> Vec<Template> {
    let inner = lock(&sim.inner);
    let or_id = q.get("or__id");
    let or_name = q.get("or__name");
    let mut out: Vec<Template> = inner
        .templates
        .values()
        .filter(|t| kind.is_none_or(|k| t.spec.kind == k))
        .filter(|t| q.get("name").is_none_or(|n| n == t.spec.name))
        .filter(|t| {
            q.get("name__icontains")
                .is_none_or(|n| t.spec.name.to_lowercase().contains(&n.to_lowercase()))
        })
        .filter(|t| q.get("id").is_none_or(|id| id == t.id.to_string()))
        .filter(|t| {
            if or_id.is_none() && or_name.is_none() {
                return true;
            }
            or_id.is_some_and(|id| id == t.id.to_string())
                || or_name.is_some_and(|n| n == t.spec.name)
        })
        .filter(|t| {
            q.get("organization").is_none_or(|o| {
                o == t.spec.organization
                    || (o == "1" && t.spec.organization == crate::config::DEFAULT_ORGANIZATION)
            })
        })
        .filter(|t| {
            q.get("type")
                .is_none_or(|ty| ty.split(',').any(|ty| ty == t.spec.kind.template_type()))
        })
        .cloned()
        .collect();
    match q.get("order_by") {
        Some("-id") => out.reverse(),
        Some("name") => out.sort_by(|a, b| a.spec.name.cmp(&b.spec.name)),
        Some("-name") => out.sort_by(|a, b| b.spec.name.cmp(&a.spec.name)),
        _ => {}
    }
    out
}

async fn list_templates(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    RawQuery(q): RawQuery,
    kind: TemplateKind,
) -> Response {
    let q = Query::from_raw(q);
    let items = filter_templates(&sim, &q, Some(kind));
    let path = format!("{p}{}/", kind.templates_path());
    result_response(paginate(items, &q, &path, |t| render_template(t, p, &sim)))
}

async fn unified_templates(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    RawQuery(q): RawQuery,
) -> Response {
    let q = Query::from_raw(q);
    let items = filter_templates(&sim, &q, None);
    let path = format!("{p}unified_job_templates/");
    result_response(paginate(items, &q, &path, |t| render_template(t, p, &sim)))
}

fn find_template(sim: &Shared, id: &str, kind: TemplateKind) -> Result<Template, ApiError> {
    let id = parse_id(id)?;
    lock(&sim.inner)
        .templates
        .get(&id)
        .filter(|t| t.spec.kind == kind)
        .cloned()
        .ok_or_else(not_found)
}

async fn get_template(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    Path(id): Path<String>,
    kind: TemplateKind,
) -> Response {
    result_response(find_template(&sim, &id, kind).map(|t| render_template(&t, p, &sim)))
}

async fn launch_info(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    kind: TemplateKind,
) -> Response {
    result_response(find_template(&sim, &id, kind).map(|t| {
        let data = json!({"name": t.spec.name, "id": t.id, "description": t.spec.description});
        let mut v = json!({
            "can_start_without_user_input": true,
            "passwords_needed_to_start": [],
            "variables_needed_to_start": [],
            "survey_enabled": false,
            "ask_variables_on_launch": t.spec.ask_variables_on_launch,
            "ask_inventory_on_launch": false,
            "ask_limit_on_launch": false,
            "ask_scm_branch_on_launch": false,
            "ask_labels_on_launch": false,
            "ask_tags_on_launch": false,
            "ask_skip_tags_on_launch": false,
            "defaults": {"extra_vars": ""},
        });
        if let Some(obj) = v.as_object_mut() {
            match kind {
                TemplateKind::Job => {
                    obj.insert("job_template_data".into(), data);
                    obj.insert("credential_needed_to_start".into(), json!(false));
                    obj.insert("inventory_needed_to_start".into(), json!(false));
                    for ask in [
                        "ask_diff_mode_on_launch",
                        "ask_job_type_on_launch",
                        "ask_verbosity_on_launch",
                        "ask_credential_on_launch",
                    ] {
                        obj.insert(ask.into(), json!(false));
                    }
                }
                TemplateKind::Workflow => {
                    obj.insert("workflow_job_template_data".into(), data);
                    obj.insert("node_templates_missing".into(), json!([]));
                    obj.insert("node_prompts_rejected".into(), json!([]));
                }
            }
        }
        v
    }))
}

async fn launch(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    Path(id): Path<String>,
    body: Bytes,
    kind: TemplateKind,
) -> Response {
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(e) => return error_response(e),
    };
    let body: Map<String, Value> = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return json_response(
                    400,
                    json!({"detail": "Expected a dictionary of launch fields."}),
                );
            }
            Err(e) => {
                return json_response(400, json!({"detail": format!("JSON parse error - {e}")}));
            }
        }
    };
    match sim.launch(kind, id, &body, p) {
        Ok(v) => json_response(201, v),
        Err(e) => error_response(e),
    }
}

async fn get_job(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    Path(id): Path<String>,
    kind: TemplateKind,
) -> Response {
    result_response(
        parse_id(&id)
            .and_then(|id| sim.with_job(kind, id, |job, sim, _| job.render(p, &sim.clock))),
    )
}

async fn stdout(State(sim): State<Sim>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let q = Query::from_raw(q);
    let text = match parse_id(&id)
        .and_then(|id| sim.with_job(TemplateKind::Job, id, |job, _, _| job.stdout()))
    {
        Ok(t) => t,
        Err(e) => return error_response(e),
    };
    match q.get("format") {
        Some("json") => json_response(
            200,
            json!({"range": {"start": 0, "end": text.lines().count(), "absolute_end": text.lines().count()}, "content": text}),
        ),
        _ => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response(),
    }
}

async fn can_cancel(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    kind: TemplateKind,
) -> Response {
    result_response(
        parse_id(&id)
            .and_then(|id| sim.with_job(kind, id, |job, _, _| job.can_cancel()))
            .map(|c| json!({"can_cancel": c})),
    )
}

async fn cancel(State(sim): State<Sim>, Path(id): Path<String>, kind: TemplateKind) -> Response {
    match parse_id(&id).and_then(|id| sim.cancel(kind, id)) {
        Ok((true, _)) => StatusCode::ACCEPTED.into_response(),
        Ok((false, status)) => json_response(
            405,
            json!({
                "error": format!("Job {id} is {} and can no longer be canceled.", status.as_str()),
                "detail": "Method \"POST\" not allowed.",
            }),
        ),
        Err(e) => error_response(e),
    }
}

/// Job filters: `id`, `id__in`, `status`, `status__in`, `name`, `job_template` /
/// `workflow_job_template` / `unified_job_template`, `labels__name` (jobs have no labels, so it
/// matches nothing); ordering by `id`/`-id` (also `created`, `-created`, `pk`, `-pk`).
fn job_matches(job: &Job, q: &Query) -> bool {
    let template_filter = [
        "job_template",
        "workflow_job_template",
        "unified_job_template",
    ]
    .iter()
    .filter_map(|k| q.get(k))
    .all(|v| v == job.template_id.to_string());
    template_filter
        && q.get("id").is_none_or(|v| v == job.id.to_string())
        && q.get("id__in").is_none_or(|v| id_list(v).contains(&job.id))
        && q.get("name").is_none_or(|v| v == job.template_name)
        && q.get("labels__name").is_none()
}

fn status_matches(status: AwxStatus, q: &Query) -> bool {
    q.get("status").is_none_or(|v| v == status.as_str())
        && q.get("status__in")
            .is_none_or(|v| v.split(',').any(|s| s.trim() == status.as_str()))
}

fn jobs_page(
    sim: &Shared,
    q: &Query,
    path: &str,
    prefix: &str,
    kinds: &[TemplateKind],
    template: Option<u64>,
) -> Result<Value, ApiError> {
    let now = Instant::now();
    let purge_after = sim.purge_after();
    let mut inner = lock(&sim.inner);
    let mut matched: Vec<u64> = Vec::new();
    for job in inner.jobs.values_mut() {
        if !kinds.contains(&job.kind)
            || template.is_some_and(|t| t != job.template_id)
            || !job_matches(job, q)
        {
            continue;
        }
        job.advance(now);
        if job.purged(now, purge_after) || !status_matches(job.status, q) {
            continue;
        }
        matched.push(job.id);
    }
    if matches!(q.get("order_by"), Some("-id" | "-created" | "-pk")) {
        matched.reverse();
    }
    let jobs = &inner.jobs;
    paginate(matched, q, path, |id| {
        jobs.get(id).map_or(Value::Null, |j| {
            let mut v = j.render(prefix, &sim.clock);
            if let Some(obj) = v.as_object_mut() {
                // AWX's list serializer leaves these out; clients must read the job itself.
                for field in LIST_EXCLUDED_JOB_FIELDS {
                    obj.remove(*field);
                }
            }
            v
        })
    })
}

async fn list_jobs(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    RawQuery(q): RawQuery,
    uri: axum::http::Uri,
    kind: TemplateKind,
) -> Response {
    let q = Query::from_raw(q);
    result_response(jobs_page(&sim, &q, uri.path(), p, &[kind], None))
}

async fn unified_jobs(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    RawQuery(q): RawQuery,
    uri: axum::http::Uri,
) -> Response {
    let q = Query::from_raw(q);
    result_response(jobs_page(&sim, &q, uri.path(), p, &TemplateKind::ALL, None))
}

async fn list_template_jobs(
    State(sim): State<Sim>,
    Prefix(p): Prefix,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    uri: axum::http::Uri,
    kind: TemplateKind,
) -> Response {
    let q = Query::from_raw(q);
    let t = match find_template(&sim, &id, kind) {
        Ok(t) => t,
        Err(e) => return error_response(e),
    };
    result_response(jobs_page(&sim, &q, uri.path(), p, &[kind], Some(t.id)))
}

async fn admin_requests(State(sim): State<Sim>) -> Response {
    let entries: Vec<RequestRecord> = lock(&sim.log).entries.iter().cloned().collect();
    json_response(200, json!(entries))
}

async fn admin_clear_requests(State(sim): State<Sim>) -> Response {
    lock(&sim.log).entries.clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn admin_stats(State(sim): State<Sim>) -> Response {
    json_response(200, json!(sim.stats()))
}

async fn admin_faults(State(sim): State<Sim>) -> Response {
    json_response(200, json!(lock(&sim.faults).faults))
}

/// Merges the posted fields into the current faults (`null` clears an optional one).
async fn admin_set_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    let patch: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            return json_response(
                400,
                json!({"error": format!("expected a JSON object: {e}")}),
            );
        }
    };
    let mut st = lock(&sim.faults);
    let mut current = match serde_json::to_value(&st.faults) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    current.extend(patch);
    let faults: Faults = match serde_json::from_value(Value::Object(current)) {
        Ok(f) => f,
        Err(e) => return json_response(400, json!({"error": e.to_string()})),
    };
    if let Err(e) = faults.validate() {
        return json_response(400, json!({"error": e.to_string()}));
    }
    tracing::info!(?faults, "faults changed");
    st.faults = faults;
    json_response(200, json!(st.faults))
}

async fn admin_templates(State(sim): State<Sim>) -> Response {
    json_response(200, json!(sim.template_specs()))
}

async fn admin_add_template(State(sim): State<Sim>, body: Bytes) -> Response {
    let spec: TemplateSpec = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => return json_response(400, json!({"error": e.to_string()})),
    };
    if spec.runner.is_some() {
        // The admin API has no authentication: it must not choose programs to run.
        return json_response(
            400,
            json!({"error": "runner templates can only be configured when the simulator starts"}),
        );
    }
    match sim.add_template(spec) {
        Ok(id) => json_response(201, json!({"id": id})),
        Err(e) => json_response(400, json!({"error": e.to_string()})),
    }
}
