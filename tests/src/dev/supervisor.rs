//! The development supervisor: no kubelet runs pods on this machine, so this
//! plays one for the tenants' runtimes. It watches the operator's runtime
//! Deployments and keeps one local `truffles-bot` process per Deployment that
//! wants replicas, started from exactly what the pod would get: the container's
//! args and environment (values, `envFrom`, `secretKeyRef`s) and its mounted
//! ConfigMaps and Secrets written to a folder of its own. A changed Deployment,
//! ConfigMap or Secret restarts the process (a rollout); replicas 0 or a deleted
//! Deployment (suspend, purge) stops it; a crash restarts it with backoff.
//! CronJobs are not run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::time::Instant;

use crate::fakes::lock;
use crate::free_port;

/// The label every tenant runtime Deployment carries (the operator's selector).
pub const RUNTIME_SELECTOR: &str = "app.kubernetes.io/name=truffles-bot";

/// What one pod of a Deployment gets, resolved from the objects it names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LocalPod {
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// File contents by their path inside the container.
    pub files: BTreeMap<String, Vec<u8>>,
    /// Writable scratch folders (emptyDir) by their path inside the container.
    pub scratch: BTreeSet<String>,
    /// PersistentVolumeClaims by their path inside the container: folders
    /// that outlive the pod.
    pub claims: BTreeMap<String, String>,
}

impl LocalPod {
    /// Changes when anything the process would see changes.
    pub fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash(&mut h);
        h.finish()
    }
}

/// The ConfigMaps and Secrets of a namespace, by name, as key → bytes.
#[derive(Default)]
pub struct Objects {
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Objects {
    fn from_stores(namespace: &str, cms: &Store<ConfigMap>, secrets: &Store<Secret>) -> Self {
        let in_ns = |ns: Option<String>| ns.as_deref() == Some(namespace);
        Self {
            config_maps: cms
                .state()
                .iter()
                .filter(|c| in_ns(c.namespace()))
                .map(|c| (c.name_any(), config_map_data(c)))
                .collect(),
            secrets: secrets
                .state()
                .iter()
                .filter(|s| in_ns(s.namespace()))
                .map(|s| {
                    let data = s
                        .data
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.0.clone()))
                        .collect();
                    (s.name_any(), data)
                })
                .collect(),
        }
    }
}

fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let text = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()));
    let binary = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()));
    text.chain(binary).collect()
}

/// Why a pod cannot start (what the kubelet reports as CreateContainerConfigError).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("the Deployment has no container")]
    NoContainer,
    #[error("{kind} {name:?} not found")]
    Missing { kind: &'static str, name: String },
    #[error("key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        kind: &'static str,
        name: String,
        key: String,
    },
    #[error("{kind} {name:?} key {key:?} is not UTF-8 and cannot be an environment variable")]
    NotText {
        kind: &'static str,
        name: String,
        key: String,
    },
}

/// Environment variable names the kubelet takes from `envFrom` (a C identifier).
fn is_env_name(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Resolves the first container of `deployment` against `objects`: what the
/// kubelet would hand the process.
pub fn render(deployment: &Deployment, objects: &Objects) -> Result<LocalPod, RenderError> {
    let template = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or(RenderError::NoContainer)?;
    let container = template
        .containers
        .first()
        .ok_or(RenderError::NoContainer)?;
    let lookup = |kind: &'static str, name: &str, optional: Option<bool>| {
        let map = match kind {
            "ConfigMap" => &objects.config_maps,
            _ => &objects.secrets,
        };
        match map.get(name) {
            Some(data) => Ok(Some(data)),
            None if optional == Some(true) => Ok(None),
            None => Err(RenderError::Missing {
                kind,
                name: name.to_owned(),
            }),
        }
    };
    let text = |kind: &'static str, name: &str, key: &str, bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|_| RenderError::NotText {
            kind,
            name: name.to_owned(),
            key: key.to_owned(),
        })
    };

    let mut pod = LocalPod {
        args: container.args.clone().unwrap_or_default(),
        ..LocalPod::default()
    };
    for source in container.env_from.iter().flatten() {
        let (kind, name, optional) = match (&source.config_map_ref, &source.secret_ref) {
            (Some(c), _) => ("ConfigMap", c.name.as_str(), c.optional),
            (None, Some(s)) => ("Secret", s.name.as_str(), s.optional),
            (None, None) => continue,
        };
        for (key, bytes) in lookup(kind, name, optional)?.into_iter().flatten() {
            if is_env_name(key) {
                let value = text(kind, name, key, bytes)?;
                pod.env.insert(
                    format!("{}{key}", source.prefix.as_deref().unwrap_or("")),
                    value,
                );
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match var.value_from.as_ref() {
            None => var.value.clone().unwrap_or_default(),
            Some(from) => {
                let (kind, name, key, optional) =
                    match (&from.secret_key_ref, &from.config_map_key_ref) {
                        (Some(s), _) => ("Secret", s.name.as_str(), s.key.as_str(), s.optional),
                        (None, Some(c)) => {
                            ("ConfigMap", c.name.as_str(), c.key.as_str(), c.optional)
                        }
                        // Field and resource references mean nothing outside a node.
                        (None, None) => continue,
                    };
                let Some(data) = lookup(kind, name, optional)? else {
                    continue;
                };
                match data.get(key) {
                    Some(bytes) => text(kind, name, key, bytes)?,
                    None if optional == Some(true) => continue,
                    None => {
                        return Err(RenderError::MissingKey {
                            kind,
                            name: name.to_owned(),
                            key: key.to_owned(),
                        });
                    }
                }
            }
        };
        pod.env.insert(var.name.clone(), value);
    }
    let volumes: HashMap<&str, _> = template
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v))
        .collect();
    for mount in container.volume_mounts.iter().flatten() {
        let Some(volume) = volumes.get(mount.name.as_str()) else {
            continue;
        };
        let data = if let Some(cm) = &volume.config_map {
            lookup("ConfigMap", &cm.name, cm.optional)?
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.as_deref().unwrap_or_default();
            lookup("Secret", name, secret.optional)?
        } else {
            if volume.empty_dir.is_some() {
                pod.scratch.insert(mount.mount_path.clone());
            }
            if let Some(claim) = &volume.persistent_volume_claim {
                pod.claims
                    .insert(mount.mount_path.clone(), claim.claim_name.clone());
            }
            continue;
        };
        for (key, bytes) in data.into_iter().flatten() {
            let path = format!("{}/{key}", mount.mount_path.trim_end_matches('/'));
            pod.files.insert(path, bytes.clone());
        }
    }
    Ok(pod)
}

/// The process's environment on this machine: the pod's, with every path
/// setting of the runtime pointed into `root` (where the mounts are written)
/// and the container ports replaced by `listen` (public, admin).
pub fn local_env(
    pod: &LocalPod,
    root: &Path,
    [listen, admin]: [SocketAddr; 2],
) -> BTreeMap<String, String> {
    let mut env = pod.env.clone();
    for (var, default) in truffles_bot::config::PATH_SETTINGS {
        let inside = env.get(var).map_or(default, String::as_str);
        let local = root.join(inside.trim_start_matches('/'));
        env.insert(var.to_owned(), local.display().to_string());
    }
    env.insert("TRUFFLES_LISTEN".into(), listen.to_string());
    env.insert("TRUFFLES_ADMIN_LISTEN".into(), admin.to_string());
    env
}

// ------------------------------------------------------------------ processes

/// A child process with its output in a log file, stopped like a pod: SIGTERM,
/// then SIGKILL after a grace period.
pub struct LocalProcess {
    child: tokio::process::Child,
    pub log: PathBuf,
}

impl LocalProcess {
    pub fn spawn(
        program: &Path,
        args: &[String],
        env: &BTreeMap<String, String>,
        log: PathBuf,
    ) -> Result<Self> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        // Appended: a restarted process's log follows its predecessor's.
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let child = tokio::process::Command::new(program)
            .args(args)
            // Only what the pod would get (and PATH, as a container has one).
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Self { child, log })
    }

    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// `Some(description)` once the process has ended.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    pub async fn stop(mut self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // tokio can only SIGKILL; `kill` sends the SIGTERM a pod gets first.
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
            if tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        let _ = self.child.kill().await;
    }
}

/// Where the development binaries are: next to the running executable (or one
/// folder up for test executables, which live in `deps/`).
pub fn binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let dir = exe.parent().context("executable without a folder")?;
    [dir.join(name), dir.join("..").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{name} is not built next to {}: `cargo build --workspace --bins` (make run and make test do)",
                exe.display()
            )
        })
}

// ------------------------------------------------------------------ supervisor

/// A tenant runtime as the supervisor runs it.
#[derive(Clone, Debug)]
pub struct LocalRuntime {
    pub namespace: String,
    /// The TrufflesClient's name.
    pub tenant: String,
    pub addr: SocketAddr,
    /// The admin API's listener.
    pub admin_addr: SocketAddr,
    /// Running now (false while stopped, crashed or not startable).
    pub running: bool,
    pub pid: Option<u32>,
    /// Why it cannot start, if it cannot.
    pub problem: Option<String>,
    pub log: PathBuf,
}

type Key = (String, String);

struct Slot {
    process: Option<LocalProcess>,
    fingerprint: u64,
    restarts: u32,
    not_before: Instant,
}

/// The supervisor's loop and the view of what it runs.
pub struct Supervisor {
    runtimes: Arc<Mutex<BTreeMap<Key, LocalRuntime>>>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Starts watching runtime Deployments (in `namespace`, or all) and running
    /// them with `bot` (the truffles-bot binary); state goes under `state_dir`.
    pub async fn start(
        client: Client,
        namespace: Option<&str>,
        bot: PathBuf,
        state_dir: PathBuf,
    ) -> Result<Self> {
        let (deployments, cms, secrets) = match namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (
                Api::all(client.clone()),
                Api::all(client.clone()),
                Api::all(client),
            ),
        };
        let deployments = watch_store(
            deployments,
            watcher::Config::default().labels(RUNTIME_SELECTOR),
        )
        .await?;
        let cms = watch_store(cms, watcher::Config::default()).await?;
        let secrets = watch_store(secrets, watcher::Config::default()).await?;
        let runtimes = Arc::new(Mutex::new(BTreeMap::new()));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(run(
            Stores {
                deployments,
                cms,
                secrets,
            },
            bot,
            state_dir,
            runtimes.clone(),
            stopped,
        ));
        Ok(Self {
            runtimes,
            stop,
            task,
        })
    }

    /// Every runtime the supervisor knows, running or not.
    pub fn runtimes(&self) -> Vec<LocalRuntime> {
        lock(&self.runtimes).values().cloned().collect()
    }

    pub fn runtime(&self, namespace: &str, tenant: &str) -> Option<LocalRuntime> {
        lock(&self.runtimes)
            .values()
            .find(|r| r.namespace == namespace && r.tenant == tenant)
            .cloned()
    }

    /// Stops every process and the loop.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

struct Stores {
    deployments: Store<Deployment>,
    cms: Store<ConfigMap>,
    secrets: Store<Secret>,
}

/// A reflector kept up to date in the background, ready once listed.
async fn watch_store<K>(api: Api<K>, config: watcher::Config) -> Result<Store<K>>
where
    K: crate::Watched + kube::Resource<DynamicType = ()>,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .touched_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    tokio::time::timeout(Duration::from_secs(60), reader.wait_until_ready())
        .await
        .context("the API server did not list the supervisor's objects within 60 s")?
        .context("the watch ended before the first list")?;
    Ok(reader)
}

const TICK: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

async fn run(
    stores: Stores,
    bot: PathBuf,
    state_dir: PathBuf,
    runtimes: Arc<Mutex<BTreeMap<Key, LocalRuntime>>>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let mut slots: BTreeMap<Key, Slot> = BTreeMap::new();
    let mut ports: HashMap<Key, [u16; 2]> = HashMap::new();
    loop {
        if *stopped.borrow() {
            break;
        }
        reconcile(&stores, &bot, &state_dir, &runtimes, &mut slots, &mut ports).await;
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stopped.changed() => {}
        }
    }
    for (key, slot) in std::mem::take(&mut slots) {
        if let Some(p) = slot.process {
            tracing::info!(namespace = %key.0, deployment = %key.1, "stopping the runtime");
            p.stop(GRACE).await;
        }
    }
    lock(&runtimes).values_mut().for_each(|r| r.running = false);
}

/// One pass: the Deployments that want replicas run, with what they would
/// mount now; everything else stops.
async fn reconcile(
    stores: &Stores,
    bot: &Path,
    state_dir: &Path,
    runtimes: &Mutex<BTreeMap<Key, LocalRuntime>>,
    slots: &mut BTreeMap<Key, Slot>,
    ports: &mut HashMap<Key, [u16; 2]>,
) {
    let mut wanted: BTreeMap<Key, (String, Result<LocalPod, RenderError>)> = BTreeMap::new();
    // A namespace's ConfigMaps and Secrets, gathered once per pass.
    let mut objects: HashMap<String, Objects> = HashMap::new();
    for d in stores.deployments.state() {
        let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let namespace = d.namespace().unwrap_or_default();
        let tenant = d
            .labels()
            .get("app.kubernetes.io/instance")
            .cloned()
            .unwrap_or_else(|| d.name_any());
        let key = (namespace.clone(), d.name_any());
        if replicas < 1 || d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let objects = objects
            .entry(namespace.clone())
            .or_insert_with(|| Objects::from_stores(&namespace, &stores.cms, &stores.secrets));
        wanted.insert(key, (tenant, render(&d, objects)));
    }

    // Stop what is no longer wanted (suspended, deleted).
    let gone: Vec<Key> = slots
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        if let Some(Slot {
            process: Some(p), ..
        }) = slots.remove(&key)
        {
            tracing::info!(namespace = %key.0, deployment = %key.1, "replicas 0 or Deployment gone: runtime stopped");
            p.stop(GRACE).await;
        }
        // A pod's emptyDir and mounts go with it.
        let _ = std::fs::remove_dir_all(pod_dir(state_dir, &key));
    }
    // A stopped runtime stays in view (a reactivated tenant keeps its port and
    // URL) until its Deployment is gone.
    let existing: BTreeSet<Key> = stores
        .deployments
        .state()
        .iter()
        .map(|d| (d.namespace().unwrap_or_default(), d.name_any()))
        .collect();
    lock(runtimes).retain(|key, r| {
        r.running &= wanted.contains_key(key);
        existing.contains(key)
    });

    for (key, (tenant, pod)) in wanted {
        let [port, admin_port] = match ports.get(&key) {
            Some(p) => *p,
            None => match free_port().and_then(|p| Ok([p, free_port()?])) {
                Ok(p) => *ports.entry(key.clone()).or_insert(p),
                Err(e) => {
                    tracing::error!(error = %e, "no free port");
                    continue;
                }
            },
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let admin_addr = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let log = state_dir
            .join("logs")
            .join(format!("{}-{}.log", key.0, key.1));
        let mut view = LocalRuntime {
            namespace: key.0.clone(),
            tenant: tenant.clone(),
            addr,
            admin_addr,
            running: false,
            pid: None,
            problem: None,
            log: log.clone(),
        };
        let pod = match pod {
            Ok(pod) => pod,
            Err(e) => {
                let previous = lock(runtimes).get(&key).and_then(|r| r.problem.clone());
                if previous.as_deref() != Some(&e.to_string()) {
                    tracing::warn!(namespace = %key.0, deployment = %key.1, error = %e, "the runtime cannot start");
                }
                view.problem = Some(e.to_string());
                // Like a kubelet: a running pod keeps running; only a new one
                // cannot start.
                if let Some(p) = slots.get(&key).and_then(|s| s.process.as_ref()) {
                    view.running = true;
                    view.pid = p.id();
                }
                lock(runtimes).insert(key, view);
                continue;
            }
        };
        let fingerprint = pod.fingerprint();
        let slot = slots.entry(key.clone()).or_insert(Slot {
            process: None,
            fingerprint,
            restarts: 0,
            not_before: Instant::now(),
        });
        if slot.fingerprint != fingerprint {
            if let Some(p) = slot.process.take() {
                tracing::info!(namespace = %key.0, deployment = %key.1, "configuration changed: restarting the runtime");
                p.stop(GRACE).await;
            }
            slot.fingerprint = fingerprint;
            slot.restarts = 0;
            slot.not_before = Instant::now();
        }
        if let Some(p) = slot.process.as_mut()
            && let Some(status) = p.exited()
        {
            slot.restarts += 1;
            let backoff = Duration::from_secs(1 << slot.restarts.min(5)).min(MAX_BACKOFF);
            tracing::warn!(namespace = %key.0, deployment = %key.1, %status, ?backoff, log = %p.log.display(), "the runtime exited; restarting after a backoff");
            // The port was free when it was chosen, but something else may
            // have bound it before the runtime did: the next start gets another.
            if std::fs::read_to_string(&p.log).is_ok_and(|l| l.contains("Address already in use")) {
                ports.remove(&key);
            }
            slot.process = None;
            slot.not_before = Instant::now() + backoff;
        }
        if slot.process.is_none() && Instant::now() >= slot.not_before {
            match start_pod(bot, state_dir, &key, &pod, [addr, admin_addr], log) {
                Ok(p) => {
                    tracing::info!(namespace = %key.0, tenant = %tenant, %addr, pid = p.id().unwrap_or(0), "runtime started (truffles-bot serve)");
                    slot.process = Some(p);
                }
                Err(e) => {
                    view.problem = Some(format!("{e:#}"));
                    slot.not_before = Instant::now() + MAX_BACKOFF;
                }
            }
        }
        view.running = slot.process.is_some();
        view.pid = slot.process.as_ref().and_then(LocalProcess::id);
        lock(runtimes).insert(key, view);
    }
}

fn pod_dir(state_dir: &Path, key: &Key) -> PathBuf {
    state_dir.join("pods").join(&key.0).join(&key.1)
}

/// Writes the pod's mounts into a fresh folder (a new pod's emptyDir is empty)
/// and starts the process.
fn start_pod(
    bot: &Path,
    state_dir: &Path,
    key: &Key,
    pod: &LocalPod,
    addrs: [SocketAddr; 2],
    log: PathBuf,
) -> Result<LocalProcess> {
    let root = pod_dir(state_dir, key);
    let _ = std::fs::remove_dir_all(&root);
    for dir in &pod.scratch {
        std::fs::create_dir_all(root.join(dir.trim_start_matches('/')))?;
    }
    // A claim's folder is kept beside the pods and linked in, so the next pod
    // finds what this one wrote (the Edge shard).
    for (path, claim) in &pod.claims {
        let volume = state_dir.join("volumes").join(&key.0).join(claim);
        std::fs::create_dir_all(&volume)?;
        let local = root.join(path.trim_start_matches('/'));
        if let Some(dir) = local.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::os::unix::fs::symlink(&volume, &local)
            .with_context(|| format!("linking {} to {}", local.display(), volume.display()))?;
    }
    for (path, content) in &pod.files {
        let local = root.join(path.trim_start_matches('/'));
        if let Some(dir) = local.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&local, content).with_context(|| format!("writing {}", local.display()))?;
        // Secrets are readable by the process only.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600))?;
    }
    LocalProcess::spawn(bot, &pod.args, &local_env(pod, &root, addrs), log)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "shop-bot", "namespace": "demo"},
            "spec": {"replicas": 1, "selector": {}, "template": {"spec": {
                "containers": [{"name": "truffles-bot", "image": "x", "args": ["serve"],
                    "envFrom": [{"configMapRef": {"name": "shop-runtime"}}, {"secretRef": {"name": "shop-runtime"}}],
                    "env": [{"name": "CHATFLOW_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                            {"name": "PLAIN", "value": "v"}],
                    "volumeMounts": [{"name": "config", "mountPath": "/etc/truffles"},
                                     {"name": "data", "mountPath": "/var/lib/truffles"},
                                     {"name": "kb", "mountPath": "/etc/truffles/knowledge/catalog"},
                                     {"name": "handover", "mountPath": "/etc/truffles/secrets/handover"}]}],
                "volumes": [{"name": "config", "configMap": {"name": "shop-runtime"}},
                            {"name": "data", "emptyDir": {}},
                            {"name": "kb", "configMap": {"name": "shop-kb", "optional": true}},
                            {"name": "handover", "secret": {"secretName": "bot"}}]}}}
        }))
        .expect("a valid Deployment")
    }

    fn objects() -> Objects {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect()
        };
        Objects {
            config_maps: BTreeMap::from([(
                "shop-runtime".into(),
                map(&[
                    ("TRUFFLES_CLIENT_NAME", "shop"),
                    ("TRUFFLES_CONFIG_FILE", "/etc/truffles/client.json"),
                    ("client.json", "{}"),
                ]),
            )]),
            secrets: BTreeMap::from([
                (
                    "shop-runtime".into(),
                    map(&[("DATABASE_URL", "postgres://t")]),
                ),
                ("creds".into(), map(&[("token", "tok")])),
                ("bot".into(), map(&[("botToken", "123:abc")])),
            ]),
        }
    }

    #[test]
    fn a_pod_gets_its_environment_and_mounts() {
        let pod = render(&deployment(), &objects()).expect("renders");
        assert_eq!(pod.args, ["serve"]);
        assert_eq!(pod.env["TRUFFLES_CLIENT_NAME"], "shop");
        assert_eq!(pod.env["DATABASE_URL"], "postgres://t");
        assert_eq!(pod.env["CHATFLOW_TOKEN"], "tok");
        assert_eq!(pod.env["PLAIN"], "v");
        // Keys that are no variable names are mounted, not exported.
        assert!(!pod.env.contains_key("client.json"));
        assert_eq!(pod.files["/etc/truffles/client.json"], b"{}");
        assert_eq!(
            pod.files["/etc/truffles/secrets/handover/botToken"],
            b"123:abc"
        );
        // The optional knowledge ConfigMap is absent: nothing mounted, no error.
        assert!(!pod.files.keys().any(|k| k.contains("knowledge")));
        assert!(pod.scratch.contains("/var/lib/truffles"));
    }

    #[test]
    fn missing_secrets_keep_the_pod_from_starting() {
        let mut o = objects();
        o.secrets.remove("creds");
        assert_eq!(
            render(&deployment(), &o),
            Err(RenderError::Missing {
                kind: "Secret",
                name: "creds".into()
            })
        );
        let mut o = objects();
        o.secrets.insert("creds".into(), BTreeMap::new());
        assert!(matches!(
            render(&deployment(), &o),
            Err(RenderError::MissingKey { .. })
        ));
    }

    #[test]
    fn a_changed_secret_changes_the_fingerprint() {
        let before = render(&deployment(), &objects()).expect("renders");
        let mut o = objects();
        o.secrets.insert(
            "creds".into(),
            BTreeMap::from([("token".into(), b"new".to_vec())]),
        );
        let after = render(&deployment(), &o).expect("renders");
        assert_ne!(before.fingerprint(), after.fingerprint());
    }

    #[test]
    fn paths_point_into_the_local_root() {
        let pod = render(&deployment(), &objects()).expect("renders");
        let env = local_env(
            &pod,
            Path::new("/tmp/pod"),
            [
                SocketAddr::from(([127, 0, 0, 1], 9000)),
                SocketAddr::from(([127, 0, 0, 1], 9001)),
            ],
        );
        assert_eq!(
            env["TRUFFLES_CONFIG_FILE"],
            "/tmp/pod/etc/truffles/client.json"
        );
        assert_eq!(env["TRUFFLES_DATA_DIR"], "/tmp/pod/var/lib/truffles");
        assert_eq!(env["TRUFFLES_SECRETS_DIR"], "/tmp/pod/etc/truffles/secrets");
        assert_eq!(
            env["TRUFFLES_KNOWLEDGE_DIR"],
            "/tmp/pod/etc/truffles/knowledge"
        );
        assert_eq!(env["TRUFFLES_LISTEN"], "127.0.0.1:9000");
        assert_eq!(env["TRUFFLES_ADMIN_LISTEN"], "127.0.0.1:9001");
    }
}
