//! Benchmark: N tenants (default 500) on a local control plane.
//!
//! Measures, in one run on one fresh kube-apiserver + etcd:
//! - operator: time from creating N `ContactTenant`s until the operator has provisioned every
//!   one (all its children applied, status written), API requests per tenant (by method), reconciles
//!   in flight, CPU of this process and of the control plane, and the growth of this process's RSS
//!   while the controller worked (the operator runs in-process);
//! - idle: requests made by a full resync of all N tenants once they are applied (expected: zero);
//! - baselines, plain client loops at the same concurrency with no watches, reads, status or
//!   events, objects built by the same pure builders, each into a namespace of its own:
//!   *tenant+children* creates each ContactTenant and applies its children (the same start and end
//!   as the operator's window, which begins with the creates), *children-only* applies just the
//!   children (the floor for writing them), and, in the first round, *all-writes* makes every write
//!   the operator makes (a diagnostic: it separates the cost of the writes from the rest).
//!
//! Run: `cargo bench -p contact-operator --bench tenants` (env `BENCH_TENANTS=N` to change N,
//! `BENCH_ROUNDS=R` to repeat operator and baselines back to back R times and report the median
//! ratio: the machine is shared, and its load moves the times far more than the code does).
//! Needs the cached control-plane binaries (`tests/controlplane/build-binaries.sh`).

use contact_crds::v1alpha1::ContactTenant;
use contact_operator::build;
use contact_operator::clock::SystemClock;
use contact_operator::config::OperatorConfig;
use contact_operator::instrument::{RequestCounter, counting_client};
use contact_operator::labels::FIELD_MANAGER;
use contact_operator::metrics::Metrics;
use contact_operator::reconcile::{CONDITION_TYPES, Ctx, run_controller};
use contact_operator::tenant::validate;
use contact_tests::controlplane::ControlPlane;
use contact_tests::kube_helpers::install_crds;
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 16;

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) of one process from `/proc/<pid>/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of this process and of its children (kube-apiserver, etcd), read together so a
/// phase's cost can be split between the operator/bench client and the control plane.
fn cpu_split() -> (f64, f64) {
    let me = std::process::id().to_string();
    let mut children = 0.0;
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let pid = entry.file_name().to_string_lossy().to_string();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .unwrap_or("");
            if ppid == me {
                children += cpu_secs(&pid);
            }
        }
    }
    (cpu_secs("self"), children)
}

fn report_cpu(label: &str, before: (f64, f64)) {
    let now = cpu_split();
    println!(
        "{label:<10} CPU: this process {:.2}s, control plane (apiserver+etcd) {:.2}s",
        now.0 - before.0,
        now.1 - before.1
    );
}

fn tenant(ns: &str, i: usize) -> ContactTenant {
    serde_json::from_value(json!({
        "apiVersion": "contact.dev/v1alpha1",
        "kind": "ContactTenant",
        "metadata": { "name": format!("t{i}"), "namespace": ns },
        "spec": {
            "displayName": format!("Tenant {i}"),
            "ingress": { "host": format!("t{i}.contact.example.com"), "className": "nginx" },
            "channels": [{
                "name": "whatsapp-main", "type": "WHATSAPP",
                "conversationApi": {
                    "region": "eu", "projectId": "p", "appId": "a",
                    "credentialsSecretRef": { "name": "sinch" },
                    "webhookSecretRef": { "name": "sinch" }
                }
            }],
            "runtime": { "image": "ghcr.io/contact-dev/contact-runtime:1.0.0" }
        }
    }))
    .expect("tenant json")
}

async fn namespace_with_secret(client: &Client, ns: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace");
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("sinch".into()),
            ..Default::default()
        },
        data: Some(
            [
                ("key-id", "i"),
                ("key-secret", "s"),
                ("webhook-secret", "w"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("secret");
}

/// The test control plane serves ClusterIPs from a /24 (253 Services); every tenant has a Service,
/// so add a /16 through the ServiceCIDR API (GA since 1.33) for the run.
async fn widen_service_range(client: &Client) {
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("networking.k8s.io", "v1", "ServiceCIDR"),
        "servicecidrs",
    );
    let mut obj = kube::api::DynamicObject::new("bench", &ar);
    obj.data = json!({ "spec": { "cidrs": ["10.96.0.0/16"] } });
    Api::<kube::api::DynamicObject>::all_with(client.clone(), &ar)
        .create(&PostParams::default(), &obj)
        .await
        .expect("ServiceCIDR");
}

fn is_provisioned(t: &ContactTenant) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Provisioned" && c.status == "True")
    })
}

/// Waits until the operator has written `Provisioned=True` for `n` tenants: it runs in this
/// process, so its metrics say so the moment each status write returns. (Following the tenants
/// through a watch, as before, cost the API server an extra watcher of every tenant write during
/// the operator's run only, which the baselines did not pay.)
async fn wait_provisioned(metrics: Arc<Metrics>, n: usize) {
    while metrics.tenants_with("Provisioned", "True") < n as i64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn ssa<K>(client: &Client, ns: &str, obj: K)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    Api::<K>::namespaced(client.clone(), ns)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply");
}

/// Writes grouped by method and resource (`PATCH statefulsets`, `PATCH contacttenants/status`).
fn writes_by_resource(counter: &RequestCounter) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for w in counter.writes() {
        let (method, path) = w.split_once(' ').unwrap_or(("?", &w));
        let segs: Vec<&str> = path.split('/').collect();
        // .../namespaces/<ns>/<resource>/<name>[/<sub>]
        let resource = segs
            .iter()
            .position(|s| *s == "namespaces")
            .and_then(|i| segs.get(i + 2))
            .map_or_else(|| path.to_string(), |r| r.to_string());
        let sub = segs
            .iter()
            .position(|s| *s == "namespaces")
            .and_then(|i| segs.get(i + 4));
        let key = match sub {
            Some(sub) => format!("{method} {resource}/{sub}"),
            None => format!("{method} {resource}"),
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

fn report(label: &str, counter: &RequestCounter, n: usize) {
    let by = counter.by_method();
    let total = counter.total();
    let writes: u64 = by
        .iter()
        .filter(|(m, _)| m.as_str() != "GET")
        .map(|(_, c)| c)
        .sum();
    println!(
        "{label:<10} requests: {total} total, {:.1}/tenant ({:.1} writes/tenant) {by:?}",
        total as f64 / n as f64,
        writes as f64 / n as f64
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let env_num = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = env_num("BENCH_TENANTS", 500);
    let rounds = env_num("BENCH_ROUNDS", 1).max(1);
    let cp = ControlPlane::start().await.expect("control plane");
    let admin = cp.client();
    install_crds(&admin, &contact_crds::crds_yaml().expect("crd"))
        .await
        .expect("crd installs");
    widen_service_range(&admin).await;
    println!(
        "tenants: {n}, rounds: {rounds}, concurrency: {CONCURRENCY}, cpus: {}",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // Each round runs the operator, then the baselines, back to back, so a change in the
    // machine's load (it is shared) hits both sides of a ratio alike; the median of the rounds'
    // ratios is the figure to quote.
    let mut ratios = Vec::new();
    for round in 0..rounds {
        println!("--- round {}", round + 1);
        let first = round == 0;
        let operator_time = run_operator(&cp, n, &format!("bench-{round}"), first).await;
        let with_tenant = run_baseline(
            &cp,
            n,
            &format!("baseline-t-{round}"),
            "tenant+children",
            Baseline::TenantAndChildren,
        )
        .await;
        let children = run_baseline(
            &cp,
            n,
            &format!("baseline-c-{round}"),
            "children-only",
            Baseline::ChildrenOnly,
        )
        .await;
        let secs = operator_time.as_secs_f64();
        let ratio = (
            secs / with_tenant.as_secs_f64(),
            secs / children.as_secs_f64(),
        );
        if first {
            let all_writes = run_baseline(
                &cp,
                n,
                &format!("baseline-w-{round}"),
                "all-writes",
                Baseline::AllOperatorWrites,
            )
            .await;
            println!(
                "diagnostic operator/all-writes time: {:.2}",
                secs / all_writes.as_secs_f64()
            );
        }
        println!(
            "ratio      operator/baseline time: {:.2} (vs tenant+children), {:.2} (vs children-only)",
            ratio.0, ratio.1
        );
        ratios.push(ratio);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median     operator/baseline time over {rounds} round(s): {:.2} (vs tenant+children), {:.2} (vs children-only)",
        median(ratios.iter().map(|r| r.0).collect()),
        median(ratios.iter().map(|r| r.1).collect())
    );
}

/// Runs a fresh in-process operator, creates `n` tenants in `ns` and returns the time from the
/// first create until every tenant is provisioned. `details`: also report requests, reconciles,
/// RSS and an idle resync (first round: later rounds' process has earlier rounds' state).
async fn run_operator(cp: &ControlPlane, n: usize, ns: &str, details: bool) -> Duration {
    let admin = cp.client();
    namespace_with_secret(&admin, ns).await;
    let (client, counter) = counting_client(cp.config().clone()).expect("client");
    let metrics = Arc::new(Metrics::default());
    // Limited to this round's namespace: earlier rounds' tenants (and the baselines' tenants,
    // which no operator provisions) are not this operator's.
    let config = OperatorConfig {
        watch_namespaces: vec![ns.to_string()],
        ..OperatorConfig::default()
    };
    let ctx = Arc::new(Ctx::new(
        client,
        config,
        Arc::new(SystemClock),
        metrics.clone(),
        Some("bench".into()),
    ));
    let rss_before = rss_kib("VmRSS:");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run_controller(ctx.clone(), async move {
        let _ = stopped.await;
    }));
    // A running operator has listed what exists before tenants arrive; in later rounds that is
    // the earlier rounds' objects, which is not part of provisioning these tenants.
    while ctx.caches.get().is_none_or(|c| !c.is_ready()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    counter.reset();
    let peak = Arc::new(AtomicU64::new(rss_before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib("VmRSS:"), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let tenants_api = Api::<ContactTenant>::namespaced(admin.clone(), ns);
    let waiter = tokio::spawn(wait_provisioned(metrics.clone(), n));
    let cpu_before = cpu_split();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| {
            let api = tenants_api.clone();
            async move {
                api.create(&PostParams::default(), &tenant(ns, i))
                    .await
                    .expect("create tenant");
            }
        })
        .await;
    let created = started.elapsed();
    tokio::time::timeout(Duration::from_secs(1800), waiter)
        .await
        .expect("operator did not finish")
        .expect("waiter");
    let operator_time = started.elapsed();
    report_cpu("operator", cpu_before);
    // The peak is the operator's: the bench's own LISTs below (500 tenants with their managed
    // fields) would otherwise count as its memory.
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    let sts = Api::<StatefulSet>::namespaced(admin.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("sts")
        .items
        .len();
    assert_eq!(sts, n, "every tenant has its workload");
    let provisioned = tenants_api
        .list(&ListParams::default())
        .await
        .expect("tenants")
        .items
        .iter()
        .filter(|t| is_provisioned(t))
        .count();
    assert_eq!(provisioned, n, "every tenant's status says Provisioned");
    println!(
        "operator   created {n} tenants in {:.2}s; all provisioned after {:.2}s ({:.1} tenants/s), {:.2}s after the last create",
        created.as_secs_f64(),
        operator_time.as_secs_f64(),
        n as f64 / operator_time.as_secs_f64(),
        operator_time.saturating_sub(created).as_secs_f64()
    );
    if details {
        report_details(&counter, &metrics, n, operator_time).await;
        println!(
            "operator   RSS: {} MiB before controller, peak {} MiB while provisioning, growth {} MiB",
            rss_before / 1024,
            peak / 1024,
            peak.saturating_sub(rss_before) / 1024,
        );
        idle_resync(&ctx, &counter, &tenants_api, n).await;
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), controller).await;
    operator_time
}

/// The operator's requests by method and resource, and its reconciles (first round only).
async fn report_details(
    counter: &RequestCounter,
    metrics: &Metrics,
    n: usize,
    operator_time: Duration,
) {
    tokio::time::sleep(Duration::from_secs(2)).await; // let own-write watch events drain
    report("operator", counter, n);
    println!(
        "operator   writes by resource: {:?}",
        writes_by_resource(counter)
    );
    // Mean reconcile time from the duration histogram; with the window's length it gives
    // the mean number of reconciles in flight (the controller allows CONCURRENCY).
    let text = metrics.encode();
    let series = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        series("contact_operator_reconcile_duration_seconds_sum"),
        series("contact_operator_reconcile_duration_seconds_count"),
    );
    println!(
        "operator   reconciles: {} ({:.2}/tenant), mean {:.0} ms, {:.1} in flight on average",
        metrics.reconciles(),
        metrics.reconciles() as f64 / n as f64,
        1000.0 * sum / count.max(1.0),
        sum / operator_time.as_secs_f64()
    );
}

/// A full pass over every applied tenant: the requests it makes (expected: none).
async fn idle_resync(
    ctx: &Arc<Ctx>,
    counter: &RequestCounter,
    tenants_api: &Api<ContactTenant>,
    n: usize,
) {
    counter.reset();
    let idle_start = Instant::now();
    let all = tenants_api
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    futures::stream::iter(all)
        .for_each_concurrent(CONCURRENCY, |t| {
            let ctx = ctx.clone();
            async move {
                contact_operator::reconcile::reconcile(Arc::new(t), ctx)
                    .await
                    .expect("reconcile");
            }
        })
        .await;
    println!(
        "idle       full resync of {n} tenants in {:.2}s",
        idle_start.elapsed().as_secs_f64()
    );
    report("idle", counter, n);
}

/// What a baseline loop writes per tenant.
#[derive(Clone, Copy, PartialEq)]
enum Baseline {
    /// Only the nine child objects (the floor for writing them).
    ChildrenOnly,
    /// Creates the ContactTenant, then applies its children: the same start (nothing exists) and
    /// end (tenant and children exist) as the operator's window, which begins with the creates.
    TenantAndChildren,
    /// Every write the operator makes per tenant, in order (create, finalizer, children, status,
    /// Event) without watches or a controller: separates the cost of the writes from the rest.
    AllOperatorWrites,
}

async fn run_baseline(
    cp: &ControlPlane,
    n: usize,
    ns: &str,
    label: &str,
    mode: Baseline,
) -> Duration {
    let admin = cp.client();
    namespace_with_secret(&admin, ns).await;
    let (plain, plain_counter) = counting_client(cp.config().clone()).expect("client");
    let cpu_before = cpu_split();
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(CONCURRENCY, |i| baseline_tenant(&plain, ns, i, mode))
        .await;
    let elapsed = started.elapsed();
    println!(
        "baseline   {label}: {n} tenants in {:.2}s ({:.1} tenants/s)",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    report_cpu("baseline", cpu_before);
    report("baseline", &plain_counter, n);
    elapsed
}

/// One tenant of a baseline: what `mode` writes, in the operator's order.
async fn baseline_tenant(client: &Client, ns: &str, i: usize, mode: Baseline) {
    let mut t = tenant(ns, i);
    let tenants = Api::<ContactTenant>::namespaced(client.clone(), ns);
    if mode == Baseline::ChildrenOnly {
        t.meta_mut().uid = Some(format!("00000000-0000-0000-0000-{i:012}"));
    } else {
        t = tenants
            .create(&PostParams::default(), &t)
            .await
            .expect("create tenant");
    }
    if mode == Baseline::AllOperatorWrites {
        let finalizer = json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [contact_operator::labels::FINALIZER] },
        ]);
        let patch: json_patch::Patch = serde_json::from_value(finalizer).expect("json patch");
        tenants
            .patch(
                &t.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
            .expect("finalizer");
    }
    let v = validate(&t, &OperatorConfig::default()).expect("valid");
    let inputs = build::Inputs {
        existing_keys: &Default::default(),
        next_window: None,
        replicas: v.replicas,
        scaled_down: false,
        ingress_namespace: "ingress-nginx",
        cnpg_image: None,
    };
    apply_children(client, ns, build::all(&v, inputs, &mut rand::rng())).await;
    if mode == Baseline::AllOperatorWrites {
        status_and_event(client, &tenants, &t, i).await;
    }
}

/// Applies a tenant's children as the operator orders them, with none of its reads.
async fn apply_children(client: &Client, ns: &str, children: build::Children) {
    let build::Children {
        service_account,
        keys,
        config_map,
        service,
        network_policy,
        ingress,
        backup_pvc,
        backup_job,
        statefulset,
        deployment,
        pdb,
        cnpg,
    } = children;
    assert!(cnpg.is_none(), "the bench's tenants run on SQLite");
    ssa(client, ns, service_account).await;
    ssa(client, ns, keys).await;
    ssa(client, ns, config_map).await;
    ssa(client, ns, service).await;
    ssa(client, ns, network_policy).await;
    if let Some(p) = backup_pvc {
        ssa::<PersistentVolumeClaim>(client, ns, p).await;
    }
    if let Some(s) = statefulset {
        ssa::<StatefulSet>(client, ns, s).await;
    }
    if let Some(d) = deployment {
        ssa::<Deployment>(client, ns, d).await;
    }
    if let Some(p) = pdb {
        ssa::<PodDisruptionBudget>(client, ns, p).await;
    }
    if let Some(c) = backup_job {
        ssa::<CronJob>(client, ns, c).await;
    }
    ssa::<Ingress>(client, ns, ingress).await;
}

/// The operator's last two writes for a new tenant: its status and an Event.
async fn status_and_event(
    client: &Client,
    tenants: &Api<ContactTenant>,
    t: &ContactTenant,
    i: usize,
) {
    let conditions: Vec<serde_json::Value> = CONDITION_TYPES
        .iter()
        .map(|c| {
            json!({
                "type": c, "status": "True", "reason": "Baseline",
                "message": "baseline", "observedGeneration": 1,
                "lastTransitionTime": "2026-11-25T00:00:00Z",
            })
        })
        .collect();
    let status = json!({
        "apiVersion": "contact.dev/v1alpha1",
        "kind": "ContactTenant",
        "status": {
            "observedGeneration": 1,
            "url": format!("https://t{i}.contact.example.com"),
            "conditions": conditions,
        }
    });
    tenants
        .patch_status(
            &t.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status");
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: FIELD_MANAGER.into(),
            instance: None,
        },
    );
    recorder
        .publish(
            &kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Normal,
                reason: "Provisioned".into(),
                note: Some("Provisioned=True: baseline".into()),
                action: "Reconcile".into(),
                secondary: None,
            },
            &t.object_ref(&()),
        )
        .await
        .expect("event");
}
