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
                checks.push(Check::new(
                    format!("cluster/{resource}"),
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
                checks.extend(items.iter().map(|item| flux_object(kind, item)));
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
    let done = crate::process::run(
        &mut command,
        &crate::process::Cancel::default(),
        Some(left),
        true,
    )
    .map_err(|err| match err {
        crate::process::ProcessError::TimedOut { .. } => {
            "kubectl got no answer before the status deadline (API server frozen?)".to_owned()
        }
        other => other.to_string(),
    })?;
    if !done.status.success() {
        return Err(clip(&one_line(&done.stderr_tail())));
    }
    let list: Value = serde_json::from_slice(&done.stdout)
        .map_err(|err| format!("kubectl printed something that is not JSON: {err}"))?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
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

fn flux_object(kind: &str, item: &Value) -> Check {
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
    match ready["status"].as_str() {
        Some("True") => Check::new(id, Level::Ok, format!("ready{at}")),
        Some("False") => Check::new(id, Level::Fail, format!("{reason}: {message}")).more(more),
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

/// One line per namespace that has pods: the worst pod decides.
fn pods(items: &[Value], now: SystemTime) -> Vec<Check> {
    let mut by_namespace: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for item in items {
        by_namespace.entry(name_of(item).0).or_default().push(item);
    }
    by_namespace
        .into_iter()
        .map(|(namespace, pods)| {
            let mut level = Level::Ok;
            let mut problems = Vec::new();
            let mut running = 0;
            let mut worst_pod = "";
            for pod in &pods {
                let (found, problem) = pod_state(pod, now);
                if let Some(problem) = problem {
                    if found > level {
                        level = found;
                        worst_pod = name_of(pod).1;
                    }
                    problems.push(problem);
                }
                if pod["status"]["phase"] != "Succeeded" {
                    running += 1;
                }
            }
            let id = format!("cluster/pods/{namespace}");
            if problems.is_empty() {
                Check::new(id, Level::Ok, format!("{running} pods ready"))
            } else {
                Check::new(id, level, problems.join("; "))
                    .more(format!("kubectl -n {namespace} describe pod {worst_pod}"))
            }
        })
        .collect()
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
    let ready = condition(pod, "Ready").is_some_and(|c| c["status"] == "True");
    if !ready {
        let level = if age > STARTUP_GRACE {
            Level::Fail
        } else {
            Level::Warn
        };
        return (
            level,
            Some(format!("{name} not ready ({phase}, for {})", ago(age))),
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

/// One line per namespace that has claims.
fn claims(items: &[Value]) -> Vec<Check> {
    let mut by_namespace: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for item in items {
        by_namespace.entry(name_of(item).0).or_default().push(item);
    }
    by_namespace
        .into_iter()
        .map(|(namespace, claims)| {
            let unbound: Vec<(&str, &str)> = claims
                .iter()
                .filter(|c| c["status"]["phase"] != "Bound")
                .map(|c| {
                    (
                        name_of(c).1,
                        c["status"]["phase"].as_str().unwrap_or("no phase"),
                    )
                })
                .collect();
            let id = format!("cluster/claims/{namespace}");
            match unbound.first() {
                None => Check::new(id, Level::Ok, format!("{} claims bound", claims.len())),
                Some((first, _)) => Check::new(
                    id,
                    Level::Fail,
                    unbound
                        .iter()
                        .map(|(name, phase)| format!("{name} is {phase}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
                .more(format!("kubectl -n {namespace} describe pvc {first}")),
            }
        })
        .collect()
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
        let check = flux_object("Kustomization", &failed);
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
            flux_object("Kustomization", &ready).message,
            "ready at main@sha1:abc"
        );
        let suspended = json!({"metadata": {"name": "x"}, "spec": {"suspend": true}});
        assert_eq!(flux_object("Kustomization", &suspended).level, Level::Warn);
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
