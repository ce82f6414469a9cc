//! The vSphere Automation REST client: one session shared by clones,
//! re-login on expiry, VM lookup, power operations and CPU/memory changes
//! checked against the hot-add rules before sending, with retries.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tracing::{debug, info, warn};

use super::error::{ErrorType, VsphereError};
use super::rules::{check_cpu, check_memory, validate_cpu_count, validate_memory_mib};
use super::types::{
    HardwareChange, PowerAction, PowerOutcome, PowerState, Resource, VmInfo, VmSummary,
    VsphereConfig,
};
use crate::http::{
    check_login, content_type, endpoint, error_chain, looks_like_json, millis, parse_base_url,
    redirect_message, unstructured_message,
};
use crate::plan::{PlannedRequest, REDACTED, REDACTED_BASIC};
use crate::retry::{Retry, RetryPolicy, delay_before_next, random_u64};

const SESSION: &str = "api/session";
const VMS: &str = "api/vcenter/vm";
/// The header that carries the session id after login.
pub const SESSION_HEADER: &str = "vmware-api-session-id";
const JSON: &str = "application/json";
/// Stands in for a VM id in plans until the URL is rendered; only URL-safe
/// characters, so escaping leaves it intact.
const PLAN_VM_ID: &str = "fincorp-plan-vm-id";

/// How a plan shows the id of the VM named `name`, which only the lookup
/// by name (`GET /api/vcenter/vm?names=NAME`) will tell.
pub fn vm_id_placeholder(name: &str) -> String {
    format!("{{id of {name}}}")
}

/// A vSphere Automation REST client. Cheap to clone; clones share the
/// connection pool and the session.
#[derive(Clone)]
pub struct VsphereClient {
    inner: Arc<Inner>,
    retry: RetryPolicy,
}

struct Inner {
    http: reqwest::Client,
    /// vCenter's URL, ending in `/`.
    base: Url,
    username: String,
    password: String,
    session: Mutex<Option<Session>>,
    /// Held while logging in, so concurrent callers wait for one login.
    logging_in: tokio::sync::Mutex<()>,
    generations: AtomicU64,
}

/// The session in use; `generation` tells a stale one from a newer one.
#[derive(Clone)]
struct Session {
    id: String,
    generation: u64,
}

impl std::fmt::Debug for VsphereClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VsphereClient")
            .field("url", &self.inner.base.as_str())
            .field("username", &self.inner.username)
            .field("password", &"<redacted>")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// One request, built once and used both to send and to plan.
#[derive(Debug, Clone)]
struct Prepared {
    method: Method,
    url: Url,
    body: Option<Value>,
}

/// What authenticates one exchange.
enum Credential<'a> {
    /// `POST /api/session`.
    Basic,
    Session(&'a Session),
}

/// A failed attempt and whether it may be retried.
struct Failure {
    error: VsphereError,
    retry: Retry,
}

impl Failure {
    fn fatal(error: VsphereError) -> Self {
        Self {
            error,
            retry: Retry::No,
        }
    }
}

/// vSphere's error body: `error_type` and the messages' texts.
fn api_error(body: &[u8]) -> Option<(ErrorType, String)> {
    let doc: Value = serde_json::from_slice(body).ok()?;
    let error_type = doc.get("error_type")?.as_str()?;
    let messages: Vec<&str> = doc
        .get("messages")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|m| m.get("default_message").and_then(Value::as_str))
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let message = if messages.is_empty() {
        error_type.to_owned()
    } else {
        messages.join("; ")
    };
    Some((ErrorType::parse(error_type), message))
}

fn require(field: &'static str, value: &str) -> Result<(), VsphereError> {
    if value.trim().is_empty() {
        return Err(VsphereError::InvalidInput {
            field,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

/// How a VM is shown in an ambiguity error.
fn describe(vm: &VmSummary) -> String {
    let mut text = format!("{} ({}", vm.vm, vm.power_state);
    if let Some(cpu) = vm.cpu_count {
        text.push_str(&format!(", {cpu} CPU"));
    }
    if let Some(mib) = vm.memory_size_mib {
        text.push_str(&format!(", {mib} MiB"));
    }
    text.push(')');
    text
}

impl VsphereClient {
    /// Checks the configuration and builds the HTTP client (rustls with the
    /// ring provider, the configured timeout, no redirects). Does not log
    /// in: the first call does.
    pub fn new(cfg: VsphereConfig) -> Result<Self, VsphereError> {
        let base = parse_base_url(&cfg.url, "vcenter").map_err(VsphereError::Config)?;
        let password =
            check_login(&cfg.username, &cfg.password, cfg.timeout).map_err(VsphereError::Config)?;
        let http = fincorp_api::http::client_builder(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| VsphereError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                username: cfg.username,
                password,
                session: Mutex::new(None),
                logging_in: tokio::sync::Mutex::new(()),
                generations: AtomicU64::new(0),
            }),
            retry: RetryPolicy::default(),
        })
    }

    /// The same client with another retry policy (tests use short delays).
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// Whether a session is held (it may have expired on the server).
    pub fn has_session(&self) -> bool {
        self.session_now().is_some()
    }

    /// Logs in now (`POST /api/session` with basic auth), replacing any
    /// session held. Other calls log in by themselves when needed.
    pub async fn login(&self) -> Result<(), VsphereError> {
        let _one_login = self.inner.logging_in.lock().await;
        self.login_locked().await.map(|_| ())
    }

    /// Ends the session (`DELETE /api/session`) if one is held. A session
    /// the server already forgot (401) counts as ended.
    pub async fn logout(&self) -> Result<(), VsphereError> {
        let _one_login = self.inner.logging_in.lock().await;
        let Some(session) = self.take_session() else {
            return Ok(());
        };
        let request = self.prepare(Method::DELETE, endpoint(&self.inner.base, SESSION), None);
        let credential = Credential::Session(&session);
        let result = self
            .retrying(&request, |attempt| {
                self.exchange(&request, &credential, attempt)
            })
            .await;
        match result {
            Ok(_) => {
                info!("vsphere session ended");
                Ok(())
            }
            Err(VsphereError::Api {
                error_type: ErrorType::Unauthenticated,
                ..
            }) => {
                debug!("vsphere session had already expired");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every VM (`GET /api/vcenter/vm`; vCenter caps the list at 4,000).
    pub async fn list_vms(&self) -> Result<Vec<VmSummary>, VsphereError> {
        let request = self.prepare(Method::GET, endpoint(&self.inner.base, VMS), None);
        self.send_for(&request).await
    }

    /// The one VM with this exact name (`GET /api/vcenter/vm?names=NAME`).
    /// None → [`VsphereError::VmNotFound`]; several →
    /// [`VsphereError::AmbiguousVm`] naming them all.
    pub async fn find_vm(&self, name: &str) -> Result<VmSummary, VsphereError> {
        let request = self.find_request(name)?;
        let rows: Vec<VmSummary> = self.send_for(&request).await?;
        // The filter is exact; a row with another name means a proxy or
        // server ignored it, and must not be acted on.
        let mut matching: Vec<VmSummary> = rows.into_iter().filter(|v| v.name == name).collect();
        match matching.len() {
            0 => Err(VsphereError::VmNotFound {
                name: name.to_owned(),
            }),
            1 => {
                let vm = matching.remove(0);
                debug!(name, vm = %vm.vm, power_state = %vm.power_state, "vsphere vm found");
                Ok(vm)
            }
            _ => Err(VsphereError::AmbiguousVm {
                name: name.to_owned(),
                vms: matching.iter().map(describe).collect(),
            }),
        }
    }

    /// The VM's details (`GET /api/vcenter/vm/{vm}`), with `vm` filled in.
    pub async fn vm(&self, vm: &str) -> Result<VmInfo, VsphereError> {
        let request = self.vm_request(vm)?;
        let mut info: VmInfo = self.send_for(&request).await?;
        info.vm = vm.to_owned();
        Ok(info)
    }

    /// The VM's power state (`GET /api/vcenter/vm/{vm}/power`).
    pub async fn power_state(&self, vm: &str) -> Result<PowerState, VsphereError> {
        #[derive(serde::Deserialize)]
        struct PowerInfo {
            state: PowerState,
        }
        let request = self.prepare(Method::GET, self.vm_url(vm, &["power"])?, None);
        let info: PowerInfo = self.send_for(&request).await?;
        Ok(info.state)
    }

    /// Runs a power operation (`POST /api/vcenter/vm/{vm}/power?action=...`
    /// → 204). `ALREADY_IN_DESIRED_STATE` is success
    /// ([`PowerOutcome::AlreadyInDesiredState`]); a retried operation whose
    /// first attempt was applied ends that way too.
    pub async fn power(&self, vm: &str, action: PowerAction) -> Result<PowerOutcome, VsphereError> {
        let request = self.power_request(vm, action)?;
        let outcome = match self.send(&request).await {
            Ok(_) => PowerOutcome::Done,
            Err(VsphereError::Api {
                error_type: ErrorType::AlreadyInDesiredState,
                ..
            }) => PowerOutcome::AlreadyInDesiredState,
            Err(e) => return Err(e),
        };
        info!(vm, action = %action, outcome = ?outcome, "vsphere power operation");
        Ok(outcome)
    }

    /// Sets the VM's CPU count: reads the VM, checks the rules
    /// ([`super::rules::check_cpu`]), and only then sends
    /// `PATCH /api/vcenter/vm/{vm}/hardware/cpu {"count": N}` (nothing when
    /// the count is already N). A refused change sends no PATCH.
    pub async fn set_cpu_count(
        &self,
        vm: &str,
        count: u32,
    ) -> Result<HardwareChange, VsphereError> {
        validate_cpu_count(count)
            .map_err(|reason| refused(vm, Resource::Cpu, None, count.into(), reason))?;
        let info = self.vm(vm).await?;
        let patch = self.cpu_patch(&info, count)?;
        self.apply(
            &info,
            Resource::Cpu,
            u64::from(info.cpu.count),
            count.into(),
            patch,
        )
        .await
    }

    /// Sets the VM's memory: reads the VM, checks the rules
    /// ([`super::rules::check_memory`]), and only then sends
    /// `PATCH /api/vcenter/vm/{vm}/hardware/memory {"size_MiB": M}`
    /// (nothing when it already has M). A refused change sends no PATCH.
    pub async fn set_memory_mib(
        &self,
        vm: &str,
        size_mib: u64,
    ) -> Result<HardwareChange, VsphereError> {
        validate_memory_mib(size_mib)
            .map_err(|reason| refused(vm, Resource::Memory, None, size_mib, reason))?;
        let info = self.vm(vm).await?;
        let patch = self.memory_patch(&info, size_mib)?;
        self.apply(
            &info,
            Resource::Memory,
            info.memory.size_mib,
            size_mib,
            patch,
        )
        .await
    }

    /// `POST /api/session` as login sends it (basic auth redacted).
    pub fn plan_login(&self) -> PlannedRequest {
        let request = self.prepare(Method::POST, endpoint(&self.inner.base, SESSION), None);
        self.planned(&request, &Credential::Basic)
    }

    /// The GET [`find_vm`](Self::find_vm) sends.
    pub fn plan_find_vm(&self, name: &str) -> Result<PlannedRequest, VsphereError> {
        Ok(self.planned_with_session(&self.find_request(name)?))
    }

    /// The GET [`vm`](Self::vm) sends.
    pub fn plan_vm(&self, vm: &str) -> Result<PlannedRequest, VsphereError> {
        Ok(self.planned_with_session(&self.vm_request(vm)?))
    }

    /// The POST [`power`](Self::power) sends.
    pub fn plan_power(
        &self,
        vm: &str,
        action: PowerAction,
    ) -> Result<PlannedRequest, VsphereError> {
        Ok(self.planned_with_session(&self.power_request(vm, action)?))
    }

    /// The requests a power operation on the VM *named* `name` sends when
    /// its id is not known yet (a dry run): the lookup by name
    /// ([`find_vm`](Self::find_vm)), then the POST, whose URL shows the id
    /// as [`vm_id_placeholder`] (`{id of NAME}`).
    pub fn plan_power_named(
        &self,
        name: &str,
        action: PowerAction,
    ) -> Result<Vec<PlannedRequest>, VsphereError> {
        let find = self.plan_find_vm(name)?;
        let mut power = self.plan_power(PLAN_VM_ID, action)?;
        power.url = power.url.replace(PLAN_VM_ID, &vm_id_placeholder(name));
        Ok(vec![find, power])
    }

    /// The requests a CPU or memory change of the VM *named* `name` sends
    /// when neither its id nor its hardware is known yet (a dry run): the
    /// lookup by name, the read of the VM (the hot-add rules are checked
    /// against it before anything else is sent), then the PATCH with
    /// `size` as the new `count` or `size_MiB`. `size` is the exact number
    /// when the playbook gives one, else a description of how it is derived
    /// from what the read returns.
    pub fn plan_hardware_named(
        &self,
        name: &str,
        resource: Resource,
        size: Value,
    ) -> Result<Vec<PlannedRequest>, VsphereError> {
        let find = self.plan_find_vm(name)?;
        let shown = vm_id_placeholder(name);
        let mut read = self.plan_vm(PLAN_VM_ID)?;
        read.url = read.url.replace(PLAN_VM_ID, &shown);
        let (segment, body) = match resource {
            Resource::Cpu => ("cpu", json!({ "count": size })),
            Resource::Memory => ("memory", json!({ "size_MiB": size })),
        };
        let request = self.prepare(
            Method::PATCH,
            self.vm_url(PLAN_VM_ID, &["hardware", segment])?,
            Some(body),
        );
        let mut patch = self.planned_with_session(&request);
        patch.url = patch.url.replace(PLAN_VM_ID, &shown);
        Ok(vec![find, read, patch])
    }

    /// The requests [`set_cpu_count`](Self::set_cpu_count) sends when the
    /// VM reads back as `info`: the GET, then the PATCH (omitted when the
    /// count is unchanged). A change the rules refuse is refused here too.
    pub fn plan_set_cpu_count(
        &self,
        info: &VmInfo,
        count: u32,
    ) -> Result<Vec<PlannedRequest>, VsphereError> {
        let patch = self.cpu_patch(info, count)?;
        self.plan_change(info, patch)
    }

    /// The requests [`set_memory_mib`](Self::set_memory_mib) sends when the
    /// VM reads back as `info`.
    pub fn plan_set_memory_mib(
        &self,
        info: &VmInfo,
        size_mib: u64,
    ) -> Result<Vec<PlannedRequest>, VsphereError> {
        let patch = self.memory_patch(info, size_mib)?;
        self.plan_change(info, patch)
    }

    fn plan_change(
        &self,
        info: &VmInfo,
        patch: Option<Prepared>,
    ) -> Result<Vec<PlannedRequest>, VsphereError> {
        let mut plan = vec![self.plan_vm(&info.vm)?];
        plan.extend(patch.map(|p| self.planned_with_session(&p)));
        Ok(plan)
    }

    /// The CPU PATCH for `info`, `None` when nothing changes, or the
    /// refusal.
    fn cpu_patch(&self, info: &VmInfo, count: u32) -> Result<Option<Prepared>, VsphereError> {
        let before = u64::from(info.cpu.count);
        check_cpu(info, count).map_err(|reason| {
            refused(&info.vm, Resource::Cpu, Some(before), count.into(), reason)
        })?;
        if info.cpu.count == count {
            return Ok(None);
        }
        Ok(Some(self.prepare(
            Method::PATCH,
            self.vm_url(&info.vm, &["hardware", "cpu"])?,
            Some(json!({ "count": count })),
        )))
    }

    fn memory_patch(&self, info: &VmInfo, size_mib: u64) -> Result<Option<Prepared>, VsphereError> {
        let before = info.memory.size_mib;
        check_memory(info, size_mib).map_err(|reason| {
            refused(&info.vm, Resource::Memory, Some(before), size_mib, reason)
        })?;
        if before == size_mib {
            return Ok(None);
        }
        Ok(Some(self.prepare(
            Method::PATCH,
            self.vm_url(&info.vm, &["hardware", "memory"])?,
            Some(json!({ "size_MiB": size_mib })),
        )))
    }

    async fn apply(
        &self,
        info: &VmInfo,
        resource: Resource,
        before: u64,
        after: u64,
        patch: Option<Prepared>,
    ) -> Result<HardwareChange, VsphereError> {
        let applied = match patch {
            Some(request) => {
                self.send(&request).await?;
                info!(vm = %info.vm, name = %info.name, resource = ?resource, before, after, "vsphere hardware changed");
                true
            }
            None => {
                debug!(vm = %info.vm, resource = ?resource, size = after, "vsphere hardware already at the requested size");
                false
            }
        };
        Ok(HardwareChange {
            vm: info.vm.clone(),
            resource,
            before,
            after,
            applied,
        })
    }

    fn prepare(&self, method: Method, url: Url, body: Option<Value>) -> Prepared {
        Prepared { method, url, body }
    }

    fn find_request(&self, name: &str) -> Result<Prepared, VsphereError> {
        require("vm name", name)?;
        let mut url = endpoint(&self.inner.base, VMS);
        url.query_pairs_mut().append_pair("names", name);
        Ok(self.prepare(Method::GET, url, None))
    }

    fn vm_request(&self, vm: &str) -> Result<Prepared, VsphereError> {
        Ok(self.prepare(Method::GET, self.vm_url(vm, &[])?, None))
    }

    fn power_request(&self, vm: &str, action: PowerAction) -> Result<Prepared, VsphereError> {
        let mut url = self.vm_url(vm, &["power"])?;
        url.query_pairs_mut().append_pair("action", action.as_str());
        Ok(self.prepare(Method::POST, url, None))
    }

    /// `/api/vcenter/vm/{vm}/{rest...}`, the id escaped as one segment.
    fn vm_url(&self, vm: &str, rest: &[&str]) -> Result<Url, VsphereError> {
        require("vm", vm)?;
        let mut url = endpoint(&self.inner.base, VMS);
        url.path_segments_mut()
            .map_err(|()| VsphereError::Config("the vcenter url cannot have a path".into()))?
            .push(vm)
            .extend(rest);
        Ok(url)
    }

    fn planned_with_session(&self, request: &Prepared) -> PlannedRequest {
        let placeholder = Session {
            id: String::new(),
            generation: 0,
        };
        self.planned(request, &Credential::Session(&placeholder))
    }

    fn planned(&self, request: &Prepared, credential: &Credential<'_>) -> PlannedRequest {
        let mut headers = vec![("Accept".to_owned(), JSON.to_owned())];
        match credential {
            Credential::Basic => {
                headers.push(("Authorization".to_owned(), REDACTED_BASIC.to_owned()))
            }
            Credential::Session(_) => {
                headers.push((SESSION_HEADER.to_owned(), REDACTED.to_owned()))
            }
        }
        if request.body.is_some() {
            headers.push(("Content-Type".to_owned(), JSON.to_owned()));
        }
        PlannedRequest {
            method: request.method.to_string(),
            url: request.url.to_string(),
            headers,
            body: request.body.clone(),
        }
    }

    async fn send_for<T: DeserializeOwned>(&self, request: &Prepared) -> Result<T, VsphereError> {
        let doc = self
            .send(request)
            .await?
            .ok_or_else(|| VsphereError::Decode {
                method: request.method.to_string(),
                url: request.url.to_string(),
                message: "the response has no body".into(),
            })?;
        serde_json::from_value(doc).map_err(|e| VsphereError::Decode {
            method: request.method.to_string(),
            url: request.url.to_string(),
            message: e.to_string(),
        })
    }

    /// Sends with a session and retries; the JSON body, if any.
    async fn send(&self, request: &Prepared) -> Result<Option<Value>, VsphereError> {
        self.retrying(request, |attempt| self.attempt(request, attempt))
            .await
    }

    async fn retrying<F, Fut>(
        &self,
        request: &Prepared,
        mut once: F,
    ) -> Result<Option<Value>, VsphereError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<Option<Value>, Failure>>,
    {
        let mut attempt = 1;
        loop {
            match once(attempt).await {
                Ok(doc) => return Ok(doc),
                Err(failure) => {
                    let Some(wait) =
                        delay_before_next(&self.retry, failure.retry, attempt, random_u64())
                    else {
                        return Err(failure.error);
                    };
                    warn!(
                        method = %request.method,
                        path = request.url.path(),
                        attempt,
                        wait_ms = millis(wait),
                        error = %failure.error,
                        "vsphere request failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt with a session: logs in first when none is held, and
    /// logs in again once when the server says the session is gone (401).
    async fn attempt(&self, request: &Prepared, attempt: u32) -> Result<Option<Value>, Failure> {
        let session = self.session().await.map_err(Failure::fatal)?;
        match self
            .exchange(request, &Credential::Session(&session), attempt)
            .await
        {
            Err(Failure {
                error:
                    VsphereError::Api { status: 401, .. } | VsphereError::Http { status: 401, .. },
                ..
            }) => {
                warn!(
                    method = %request.method,
                    path = request.url.path(),
                    "vsphere session expired; logging in again"
                );
                let fresh = self
                    .relogin(session.generation)
                    .await
                    .map_err(Failure::fatal)?;
                self.exchange(request, &Credential::Session(&fresh), attempt)
                    .await
            }
            other => other,
        }
    }

    fn session_now(&self) -> Option<Session> {
        self.inner
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn take_session(&self) -> Option<Session> {
        self.inner
            .session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// The session to use, logging in if none is held.
    async fn session(&self) -> Result<Session, VsphereError> {
        if let Some(s) = self.session_now() {
            return Ok(s);
        }
        let _one_login = self.inner.logging_in.lock().await;
        if let Some(s) = self.session_now() {
            return Ok(s);
        }
        self.login_locked().await
    }

    /// A new session unless someone already replaced session `stale`.
    async fn relogin(&self, stale: u64) -> Result<Session, VsphereError> {
        let _one_login = self.inner.logging_in.lock().await;
        if let Some(s) = self.session_now().filter(|s| s.generation != stale) {
            return Ok(s);
        }
        self.login_locked().await
    }

    /// `POST /api/session` → 201 with the session id as a JSON string. The
    /// caller holds `logging_in`.
    async fn login_locked(&self) -> Result<Session, VsphereError> {
        let request = self.prepare(Method::POST, endpoint(&self.inner.base, SESSION), None);
        let result = self
            .retrying(&request, |attempt| {
                self.exchange(&request, &Credential::Basic, attempt)
            })
            .await;
        let doc = match result {
            Ok(doc) => doc,
            Err(
                VsphereError::Api {
                    url,
                    status: status @ (401 | 403),
                    message,
                    ..
                }
                | VsphereError::Http {
                    url,
                    status: status @ (401 | 403),
                    message,
                    ..
                },
            ) => {
                return Err(VsphereError::Login {
                    url,
                    status,
                    message,
                });
            }
            Err(e) => return Err(e),
        };
        let id = match doc {
            Some(Value::String(id)) if !id.trim().is_empty() => id,
            other => {
                return Err(VsphereError::Decode {
                    method: request.method.to_string(),
                    url: request.url.to_string(),
                    message: format!(
                        "the session id must be a JSON string, got {}",
                        other.map_or("no body".to_owned(), |v| match v {
                            Value::String(_) => "an empty string".to_owned(),
                            other => kind(&other).to_owned(),
                        })
                    ),
                });
            }
        };
        let generation = self.inner.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let session = Session { id, generation };
        *self.inner.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session.clone());
        info!(username = %self.inner.username, "vsphere session created");
        Ok(session)
    }

    /// One HTTP exchange, classified.
    async fn exchange(
        &self,
        request: &Prepared,
        credential: &Credential<'_>,
        attempt: u32,
    ) -> Result<Option<Value>, Failure> {
        let method = request.method.to_string();
        let url = request.url.to_string();
        let mut builder = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .header(ACCEPT, JSON);
        match credential {
            Credential::Basic => {
                builder = builder.basic_auth(&self.inner.username, Some(&self.inner.password));
            }
            Credential::Session(session) => {
                let mut value = HeaderValue::from_str(&session.id).map_err(|_| {
                    Failure::fatal(VsphereError::Decode {
                        method: method.clone(),
                        url: url.clone(),
                        message: "the session id is not a valid header value".into(),
                    })
                })?;
                value.set_sensitive(true);
                builder = builder.header(SESSION_HEADER, value);
            }
        }
        if let Some(body) = &request.body {
            builder = builder.header(CONTENT_TYPE, JSON).body(body.to_string());
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let retry = if e.is_builder() {
                    Retry::No
                } else {
                    Retry::Backoff
                };
                return Err(Failure {
                    error: VsphereError::Transport {
                        method,
                        url,
                        message: error_chain(&e),
                    },
                    retry,
                });
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let content_type = content_type(&headers);
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => {
                return Err(Failure {
                    error: VsphereError::Transport {
                        method,
                        url,
                        message: error_chain(&e),
                    },
                    retry: Retry::Backoff,
                });
            }
        };
        debug!(method = %request.method, path = request.url.path(), status = status.as_u16(), attempt, "vsphere response");

        if status.is_success() {
            if body.trim_ascii().is_empty() {
                return Ok(None);
            }
            if !looks_like_json(&content_type, &body) {
                return Err(Failure::fatal(VsphereError::Decode {
                    method,
                    url,
                    message: format!(
                        "expected JSON, got HTTP {} with {content_type:?}",
                        status.as_u16()
                    ),
                }));
            }
            return serde_json::from_slice::<Value>(&body)
                .map(Some)
                .map_err(|e| {
                    Failure::fatal(VsphereError::Decode {
                        method,
                        url,
                        message: format!("invalid JSON: {e}"),
                    })
                });
        }

        let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
        let by_status = Retry::for_status(status, retry_after);
        if let Some((error_type, message)) = api_error(&body) {
            let retry = match by_status {
                Retry::No if error_type.is_transient() => Retry::Backoff,
                other => other,
            };
            let retry = if status == StatusCode::UNAUTHORIZED {
                Retry::No
            } else {
                retry
            };
            return Err(Failure {
                error: VsphereError::Api {
                    method,
                    url,
                    status: status.as_u16(),
                    error_type,
                    message,
                },
                retry,
            });
        }
        let message = if status.is_redirection() {
            redirect_message(&headers)
        } else {
            unstructured_message(status, &content_type, &body)
        };
        Err(Failure {
            error: VsphereError::Http {
                method,
                url,
                status: status.as_u16(),
                message,
            },
            retry: by_status,
        })
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn refused(
    vm: &str,
    resource: Resource,
    before: Option<u64>,
    after: u64,
    reason: String,
) -> VsphereError {
    let (what, unit) = match resource {
        Resource::Cpu => ("cpu count", ""),
        Resource::Memory => ("memory", " MiB"),
    };
    let what = match before {
        Some(before) => format!("{what} {before}{unit} → {after}{unit}"),
        None => format!("{what} → {after}{unit}"),
    };
    VsphereError::Refused {
        vm: vm.to_owned(),
        what,
        reason,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;
    use crate::vsphere::types::{CpuInfo, MemoryInfo};
    use fincorp_api::config::Secret;
    use std::time::Duration;

    fn client(url: &str) -> VsphereClient {
        VsphereClient::new(VsphereConfig {
            url: url.into(),
            username: "fincorp-automation@vsphere.local".into(),
            password: Secret::new("hunter2-password"),
            timeout: Duration::from_secs(5),
        })
        .unwrap()
    }

    #[test]
    fn config_is_checked_and_never_shows_the_password() {
        let c = client("https://vc.example/");
        assert!(!format!("{c:?}").contains("hunter2"));
        for (url, why) in [
            ("nope", "not a valid URL"),
            ("https://u:hunter2@vc", "credentials"),
        ] {
            let err = VsphereClient::new(VsphereConfig {
                url: url.into(),
                username: "u".into(),
                password: Secret::new("hunter2"),
                timeout: Duration::from_secs(1),
            })
            .unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
            assert!(!err.to_string().contains("hunter2"));
        }
        let err = VsphereClient::new(VsphereConfig {
            url: "https://vc".into(),
            username: " ".into(),
            password: Secret::new("x"),
            timeout: Duration::from_secs(1),
        })
        .unwrap_err();
        assert!(matches!(err, VsphereError::Config(_)));
    }

    #[test]
    fn urls_escape_the_vm_id_and_keep_a_prefix() {
        let c = client("https://proxy.local/vc");
        let plan = c.plan_power("vm-1/../x", PowerAction::Start).unwrap();
        assert_eq!(
            plan.url,
            "https://proxy.local/vc/api/vcenter/vm/vm-1%2F..%2Fx/power?action=start"
        );
        let plan = c.plan_find_vm("core primary&ny").unwrap();
        assert_eq!(
            plan.url,
            "https://proxy.local/vc/api/vcenter/vm?names=core+primary%26ny"
        );
        assert!(matches!(
            c.plan_vm(""),
            Err(VsphereError::InvalidInput { field: "vm", .. })
        ));
        let login = c.plan_login();
        assert_eq!(login.method, "POST");
        assert_eq!(login.url, "https://proxy.local/vc/api/session");
        assert_eq!(login.header("Authorization"), Some("Basic <redacted>"));
    }

    #[test]
    fn plans_by_name_show_the_lookup_then_the_call_with_the_id_to_be_found() {
        let c = client("https://vc.example");
        let plan = c
            .plan_power_named("core-ldn-01", PowerAction::Start)
            .unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(
            (plan[0].method.as_str(), plan[0].url.as_str()),
            ("GET", "https://vc.example/api/vcenter/vm?names=core-ldn-01")
        );
        assert_eq!(
            (plan[1].method.as_str(), plan[1].url.as_str()),
            (
                "POST",
                "https://vc.example/api/vcenter/vm/{id of core-ldn-01}/power?action=start"
            )
        );
        assert_eq!(plan[1].header(SESSION_HEADER), Some("<redacted>"));
        assert_eq!(plan[1].body, None);

        let plan = c
            .plan_hardware_named("hft-engine-ny-01", Resource::Memory, json!(20480))
            .unwrap();
        let shown: Vec<_> = plan
            .iter()
            .map(|r| format!("{} {}", r.method, r.url))
            .collect();
        assert_eq!(
            shown,
            [
                "GET https://vc.example/api/vcenter/vm?names=hft-engine-ny-01",
                "GET https://vc.example/api/vcenter/vm/{id of hft-engine-ny-01}",
                "PATCH https://vc.example/api/vcenter/vm/{id of hft-engine-ny-01}/hardware/memory",
            ]
        );
        assert_eq!(plan[2].body, Some(json!({"size_MiB": 20480})));
        assert_eq!(plan[2].header("Content-Type"), Some("application/json"));
        assert!(matches!(
            c.plan_power_named(" ", PowerAction::Start),
            Err(VsphereError::InvalidInput { .. })
        ));
    }

    #[test]
    fn error_bodies_are_decoded() {
        let body = br#"{"error_type":"NOT_ALLOWED_IN_CURRENT_STATE","messages":[{"args":[],"default_message":"CPU hot-add is not enabled.","id":"x"},{"args":[],"default_message":"Power off the VM.","id":"y"}]}"#;
        assert_eq!(
            api_error(body),
            Some((
                ErrorType::NotAllowedInCurrentState,
                "CPU hot-add is not enabled.; Power off the VM.".into()
            ))
        );
        assert_eq!(
            api_error(br#"{"error_type":"NOT_FOUND","messages":[]}"#),
            Some((ErrorType::NotFound, "NOT_FOUND".into()))
        );
        assert_eq!(api_error(b"<html>502</html>"), None);
        assert_eq!(api_error(br#"{"message":"x"}"#), None);
    }

    #[test]
    fn plans_show_the_exact_patch_or_refuse_like_the_call() {
        let c = client("https://vc.example");
        let info = VmInfo {
            vm: "vm-1001".into(),
            name: "core-primary-ny".into(),
            power_state: PowerState::PoweredOn,
            cpu: CpuInfo {
                count: 8,
                cores_per_socket: 4,
                hot_add_enabled: true,
                hot_remove_enabled: false,
            },
            memory: MemoryInfo {
                size_mib: 32768,
                hot_add_enabled: false,
                hot_add_increment_size_mib: None,
                hot_add_limit_mib: None,
            },
        };
        let plan = c.plan_set_cpu_count(&info, 12).unwrap();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].method, "GET");
        assert_eq!(plan[0].url, "https://vc.example/api/vcenter/vm/vm-1001");
        assert_eq!(plan[1].method, "PATCH");
        assert_eq!(
            plan[1].url,
            "https://vc.example/api/vcenter/vm/vm-1001/hardware/cpu"
        );
        assert_eq!(plan[1].body, Some(json!({"count": 12})));
        assert_eq!(plan[1].header(SESSION_HEADER), Some("<redacted>"));
        assert_eq!(plan[1].header("Content-Type"), Some("application/json"));
        assert_eq!(
            c.plan_set_cpu_count(&info, 8).unwrap().len(),
            1,
            "unchanged: no PATCH"
        );
        match c.plan_set_cpu_count(&info, 10).unwrap_err() {
            VsphereError::Refused { vm, what, reason } => {
                assert_eq!(vm, "vm-1001");
                assert_eq!(what, "cpu count 8 → 10");
                assert!(reason.contains("cores per socket"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let err = c.plan_set_memory_mib(&info, 65536).unwrap_err();
        assert!(
            err.to_string().contains("memory 32768 MiB → 65536 MiB"),
            "{err}"
        );
        let off = VmInfo {
            power_state: PowerState::PoweredOff,
            ..info
        };
        let plan = c.plan_set_memory_mib(&off, 65536).unwrap();
        assert_eq!(plan[1].body, Some(json!({"size_MiB": 65536})));
        assert_eq!(
            plan[1].url,
            "https://vc.example/api/vcenter/vm/vm-1001/hardware/memory"
        );
    }
}
