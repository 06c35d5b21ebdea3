//! The cluster, through the k3s API with the host's kubeconfig (`kubectl`, each call bounded):
//! every Flux source, Kustomization and HelmRelease Ready and at which revision, pods that are
//! not ready or keep restarting, claims that are not bound.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::{Check, Level, ago, one_line};

/// A pod may take this long to be scheduled, pull its image and become ready before that is a
/// failure rather than a start.
const STARTUP_GRACE: Duration = Duration::from_secs(5 * 60);
/// A container that restarted within this is reported, even when it is running again.
const RECENT_RESTART: Duration = Duration::from_secs(3600);
/// Flux messages can hold a whole kustomize error; the line keeps its start.
const MESSAGE_LIMIT: usize = 600;

/// The Flux kinds reported one line each: (kind, resource name for kubectl).
const FLUX_KINDS: [(&str, &str); 4] = [
    ("GitRepository", "gitrepositories.source.toolkit.fluxcd.io"),
    ("OCIRepository", "ocirepositories.source.toolkit.fluxcd.io"),
    (
        "Kustomization",
        "kustomizations.kustomize.toolkit.fluxcd.io",
    ),
    ("HelmRelease", "helmreleases.helm.toolkit.fluxcd.io"),
];

/// Waiting reasons that mean the container will not start by itself.
const STUCK: [&str; 7] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
];

pub fn check(kubeconfig: &Path, deadline: Instant) -> Vec<Check> {
    let resources: Vec<&str> = FLUX_KINDS
        .iter()
        .map(|(_, resource)| *resource)
        .chain(["pods", "persistentvolumeclaims"])
        .collect();
    // One kubectl per resource, all at once: a missing CRD costs its own line, not the cluster.
    let answers: Vec<(&str, Result<Vec<Value>, String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = resources
            .iter()
            .map(|resource| {
                let kubeconfig = kubeconfig.to_owned();
                let resource = *resource;
                scope.spawn(move || (resource, list(&kubeconfig, resource, deadline)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or(("?", Err("a kubectl thread panicked".to_owned())))
            })
            .collect()
    });
    if answers.iter().all(|(_, answer)| answer.is_err()) {
        let reason = answers
            .iter()
            .find_map(|(_, a)| a.as_ref().err())
            .cloned()
            .unwrap_or_default();
        return vec![
            Check::new(
                "cluster",
                Level::Unknown,
                format!("cannot reach the k3s API: {reason}"),
            )
            .more("systemctl status k3s; journalctl -u k3s -n 50"),
        ];
    }
    let now = SystemTime::now();
    let mut checks = Vec::new();
    for (resource, answer) in answers {
        let items = match answer {
            Ok(items) => items,
            Err(err) => {
                // Named like the checks the list holds, which keep their state meanwhile.
                checks.push(Check::new(
                    format!("cluster/{}", group_name(resource)),
                    Level::Unknown,
                    format!("cannot list {resource}: {err}"),
                ));
                continue;
            }
        };
        match resource {
            "pods" => checks.extend(pods(&items, now)),
            "persistentvolumeclaims" => checks.extend(claims(&items)),
            _ => {
                let kind = FLUX_KINDS
                    .iter()
                    .find(|(_, r)| *r == resource)
                    .map_or(resource, |(k, _)| *k);
                checks.extend(items.iter().map(|item| flux_object(kind, item, now)));
            }
        }
    }
    checks
}

fn list(kubeconfig: &PathBuf, resource: &str, deadline: Instant) -> Result<Vec<Value>, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    // kubectl's own limit a little inside ours, so that its error message is what we show.
    let request = left
        .saturating_sub(Duration::from_millis(500))
        .as_secs()
        .max(1);
    let mut command = std::process::Command::new("kubectl");
    command
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg(format!("--request-timeout={request}s"))
        .args(["get", resource, "--all-namespaces", "--output=json"]);
    let done = super::run_within(
        &mut command,
        left,
        "kubectl got no answer before the status deadline (API server frozen?)",
    )?;
    if !done.status.success() {
        return Err(clip(&one_line(&done.stderr_tail())));
    }
    let list: Value = serde_json::from_slice(&done.stdout)
        .map_err(|err| format!("kubectl printed something that is not JSON: {err}"))?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

/// The id segment under which a resource's checks are reported.
fn group_name(resource: &str) -> &str {
    match resource {
        "pods" => "pods",
        "persistentvolumeclaims" => "claims",
        _ => FLUX_KINDS
            .iter()
            .find(|(_, r)| *r == resource)
            .map_or(resource, |(k, _)| *k),
    }
}

fn clip(text: &str) -> String {
    if text.chars().count() <= MESSAGE_LIMIT {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MESSAGE_LIMIT).collect();
    format!("{cut}…")
}

fn name_of(item: &Value) -> (&str, &str) {
    (
        item["metadata"]["namespace"].as_str().unwrap_or(""),
        item["metadata"]["name"].as_str().unwrap_or("?"),
    )
}

fn condition<'a>(item: &'a Value, kind: &str) -> Option<&'a Value> {
    item["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

/// A dependency that is not ready yet is a normal moment after every push; a reconcile that
/// neither finishes nor fails for this long is stuck.
const FLUX_SETTLE: Duration = Duration::from_secs(15 * 60);

fn flux_object(kind: &str, item: &Value, now: SystemTime) -> Check {
    let (namespace, name) = name_of(item);
    let id = format!("cluster/{kind}/{namespace}/{name}");
    let more = format!(
        "kubectl -n {namespace} describe {} {name}",
        kind.to_lowercase()
    );
    let status = &item["status"];
    let revision = ["lastAppliedRevision", "lastAttemptedRevision"]
        .iter()
        .find_map(|k| status[k].as_str())
        .or_else(|| status["artifact"]["revision"].as_str())
        .filter(|r| !r.is_empty());
    let at = revision.map_or(String::new(), |r| format!(" at {}", one_line(r)));
    if item["spec"]["suspend"] == true {
        return Check::new(id, Level::Warn, format!("suspended{at}")).more(more);
    }
    let Some(ready) = condition(item, "Ready") else {
        return Check::new(id, Level::Warn, "not reconciled yet (no Ready condition)").more(more);
    };
    let reason = ready["reason"].as_str().unwrap_or("");
    let message = clip(&one_line(ready["message"].as_str().unwrap_or("")));
    let settled = since(time_of(&ready["lastTransitionTime"]), now) > FLUX_SETTLE;
    match ready["status"].as_str() {
        Some("True") => Check::new(id, Level::Ok, format!("ready{at}")),
        Some("False") if reason == "DependencyNotReady" && !settled => {
            Check::new(id, Level::Warn, format!("{reason}: {message}")).more(more)
        }
        Some("False") => Check::new(id, Level::Fail, format!("{reason}: {message}")).more(more),
        _ if settled => Check::new(
            id,
            Level::Fail,
            format!(
                "stuck reconciling for more than {} min{at}: {message}",
                FLUX_SETTLE.as_secs() / 60
            ),
        )
        .more(more),
        _ => Check::new(id, Level::Warn, format!("reconciling{at}: {message}")).more(more),
    }
}

fn time_of(value: &Value) -> Option<SystemTime> {
    value
        .as_str()
        .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
}

/// How long ago `time` was; a time in the future counts as just now.
fn since(time: Option<SystemTime>, now: SystemTime) -> Duration {
    time.and_then(|t| now.duration_since(t).ok())
        .unwrap_or(Duration::ZERO)
}

/// The workload a pod belongs to: its owner, a ReplicaSet named after its Deployment with the
/// pod-template-hash stripped; a pod of its own is its own workload. Stable across restarts, so
/// one workload's alert does not come and go with its pods' names.
fn workload(pod: &Value) -> String {
    let name = name_of(pod).1;
    let Some(owner) = pod["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|owners| owners.first())
        .and_then(|o| o["name"].as_str())
    else {
        return name.to_owned();
    };
    match pod["metadata"]["labels"]["pod-template-hash"].as_str() {
        Some(hash) => owner
            .strip_suffix(hash)
            .and_then(|o| o.strip_suffix('-'))
            .unwrap_or(owner)
            .to_owned(),
        None => owner.to_owned(),
    }
}

/// One ok line per namespace whose pods are all well; otherwise one line per workload in
/// trouble (a second workload failing beside an announced one is its own alert).
fn pods(items: &[Value], now: SystemTime) -> Vec<Check> {
    let mut by_namespace: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for item in items {
        by_namespace.entry(name_of(item).0).or_default().push(item);
    }
    let mut checks = Vec::new();
    for (namespace, pods) in by_namespace {
        let mut troubled: BTreeMap<String, (Level, Vec<String>, &str)> = BTreeMap::new();
        let mut running = 0;
        for pod in &pods {
            if pod["status"]["phase"] != "Succeeded" {
                running += 1;
            }
            let (level, problem) = pod_state(pod, now);
            let Some(problem) = problem else { continue };
            let entry =
                troubled
                    .entry(workload(pod))
                    .or_insert((Level::Ok, Vec::new(), name_of(pod).1));
            if level > entry.0 {
                entry.0 = level;
                entry.2 = name_of(pod).1;
            }
            entry.1.push(problem);
        }
        if troubled.is_empty() {
            checks.push(Check::new(
                format!("cluster/pods/{namespace}"),
                Level::Ok,
                format!("{running} pods ready"),
            ));
        }
        for (workload, (level, problems, pod)) in troubled {
            checks.push(
                Check::new(
                    format!("cluster/pods/{namespace}/{workload}"),
                    level,
                    problems.join("; "),
                )
                .more(format!("kubectl -n {namespace} describe pod {pod}")),
            );
        }
    }
    checks
}

fn pod_state(pod: &Value, now: SystemTime) -> (Level, Option<String>) {
    let name = name_of(pod).1;
    let status = &pod["status"];
    let phase = status["phase"].as_str().unwrap_or("Unknown");
    let age = since(time_of(&pod["metadata"]["creationTimestamp"]), now);
    let containers: Vec<&Value> = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .filter_map(|k| status[k].as_array())
        .flatten()
        .collect();
    for container in &containers {
        let waiting = &container["state"]["waiting"];
        let reason = waiting["reason"].as_str().unwrap_or("");
        if STUCK.contains(&reason) {
            let message = clip(&one_line(waiting["message"].as_str().unwrap_or("")));
            return (
                Level::Fail,
                Some(format!(
                    "{name}: container {} {reason} (restarted {} times){}",
                    container["name"].as_str().unwrap_or("?"),
                    container["restartCount"].as_u64().unwrap_or(0),
                    if message.is_empty() {
                        String::new()
                    } else {
                        format!(": {message}")
                    }
                )),
            );
        }
    }
    // A pod being deleted (a rollout, a drain) is on its way out, unless it is stuck there.
    if let Some(deleting) = time_of(&pod["metadata"]["deletionTimestamp"]) {
        let stuck = since(Some(deleting), now);
        return if stuck > STARTUP_GRACE {
            (
                Level::Fail,
                Some(format!("{name} stuck terminating for {}", ago(stuck))),
            )
        } else {
            (Level::Ok, None)
        };
    }
    match phase {
        "Succeeded" => return (Level::Ok, None),
        "Failed" => {
            let why = status["message"]
                .as_str()
                .or(status["reason"].as_str())
                .unwrap_or("");
            return (
                Level::Fail,
                Some(format!("{name} failed: {}", clip(&one_line(why)))),
            );
        }
        "Pending" => {
            let why = condition(pod, "PodScheduled")
                .filter(|c| c["status"] != "True")
                .and_then(|c| c["message"].as_str())
                .map_or(String::new(), |m| format!(": {}", clip(&one_line(m))));
            let level = if age > STARTUP_GRACE {
                Level::Fail
            } else {
                Level::Warn
            };
            return (level, Some(format!("{name} pending for {}{why}", ago(age))));
        }
        _ => {}
    }
    let ready = condition(pod, "Ready");
    if ready.is_none_or(|c| c["status"] != "True") {
        // Unready since the condition last changed (a long-running pod that just turned
        // unready is new trouble), or since the pod was made.
        let unready_for = ready
            .and_then(|c| time_of(&c["lastTransitionTime"]))
            .map_or(age, |t| since(Some(t), now));
        let level = if unready_for > STARTUP_GRACE {
            Level::Fail
        } else {
            Level::Warn
        };
        return (
            level,
            Some(format!(
                "{name} not ready ({phase}, for {})",
                ago(unready_for)
            )),
        );
    }
    for container in &containers {
        let restarts = container["restartCount"].as_u64().unwrap_or(0);
        let terminated = &container["lastState"]["terminated"];
        let finished = time_of(&terminated["finishedAt"]);
        if restarts > 0 && finished.is_some() && since(finished, now) < RECENT_RESTART {
            return (
                Level::Warn,
                Some(format!(
                    "{name}: container {} restarted {restarts} times, last {} ago ({})",
                    container["name"].as_str().unwrap_or("?"),
                    ago(since(finished, now)),
                    terminated["reason"].as_str().unwrap_or("no reason given")
                )),
            );
        }
    }
    (Level::Ok, None)
}

/// One ok line per namespace whose claims are all bound; otherwise one line per claim that is
/// not.
fn claims(items: &[Value]) -> Vec<Check> {
    let mut by_namespace: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for item in items {
        by_namespace.entry(name_of(item).0).or_default().push(item);
    }
    let mut checks = Vec::new();
    for (namespace, claims) in by_namespace {
        let unbound: Vec<&&Value> = claims
            .iter()
            .filter(|c| c["status"]["phase"] != "Bound")
            .collect();
        if unbound.is_empty() {
            checks.push(Check::new(
                format!("cluster/claims/{namespace}"),
                Level::Ok,
                format!("{} claims bound", claims.len()),
            ));
        }
        for claim in unbound {
            let name = name_of(claim).1;
            checks.push(
                Check::new(
                    format!("cluster/claims/{namespace}/{name}"),
                    Level::Fail,
                    format!(
                        "{name} is {}",
                        claim["status"]["phase"]
                            .as_str()
                            .unwrap_or("without a phase")
                    ),
                )
                .more(format!("kubectl -n {namespace} describe pvc {name}")),
            );
        }
    }
    checks
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::{Level, flux_object, pod_state};

    #[test]
    fn a_kustomization_is_read_from_its_ready_condition() {
        let failed = json!({
            "metadata": {"namespace": "flux-system", "name": "kopia"},
            "status": {"conditions": [{"type": "Ready", "status": "False",
                "reason": "ReconciliationFailed", "message": "decryption failed\nfor x"}]}
        });
        let now = SystemTime::now();
        let check = flux_object("Kustomization", &failed, now);
        assert_eq!(check.level, Level::Fail);
        assert_eq!(check.id, "cluster/Kustomization/flux-system/kopia");
        assert_eq!(
            check.message,
            "ReconciliationFailed: decryption failed for x"
        );
        let ready = json!({
            "metadata": {"namespace": "flux-system", "name": "kopia"},
            "status": {"lastAppliedRevision": "main@sha1:abc",
                "conditions": [{"type": "Ready", "status": "True"}]}
        });
        assert_eq!(
            flux_object("Kustomization", &ready, now).message,
            "ready at main@sha1:abc"
        );
        let suspended = json!({"metadata": {"name": "x"}, "spec": {"suspend": true}});
        assert_eq!(
            flux_object("Kustomization", &suspended, now).level,
            Level::Warn
        );
    }

    #[test]
    fn a_young_pending_pod_is_starting_an_old_one_failed() {
        let now = SystemTime::now();
        let created = |ago: u64| {
            humantime::format_rfc3339_seconds(now - Duration::from_secs(ago)).to_string()
        };
        let pod = |ago| {
            json!({"metadata": {"name": "p", "creationTimestamp": created(ago)},
                   "status": {"phase": "Pending"}})
        };
        assert_eq!(pod_state(&pod(30), now).0, Level::Warn);
        assert_eq!(pod_state(&pod(3600), now).0, Level::Fail);
        let future = json!({"metadata": {"name": "p",
            "creationTimestamp": humantime::format_rfc3339_seconds(now + Duration::from_secs(86400)).to_string()},
            "status": {"phase": "Pending"}});
        assert_eq!(
            pod_state(&future, now).0,
            Level::Warn,
            "a clock ahead is not an old pod"
        );
    }
}
