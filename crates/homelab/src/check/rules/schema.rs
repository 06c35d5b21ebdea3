//! schema/*: every object against the strict schema of its kind, and the sizes the API server refuses.

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::schema::Outcome;
use crate::check::tree::Object;
use crate::check::yaml::{Node, Value};

impl Checker<'_> {
    pub(super) fn schema_invalid(&mut self) {
        for object in self.objects() {
            let Outcome::Invalid(violations) = self.schemas.validate(
                &api_version(object),
                kind(&object.node),
                &as_applied(object),
            ) else {
                continue;
            };
            for violation in violations {
                let at = object.node.at_pointer(&violation.pointer);
                let field = if violation.pointer.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", violation.pointer)
                };
                self.at(
                    &rules::SCHEMA,
                    object,
                    at,
                    format!("{}{field}: {}", label(&object.node), violation.message),
                );
            }
        }
    }

    pub(super) fn schema_unknown_kind(&mut self) {
        for object in self.objects() {
            let api_version = api_version(object);
            if !self.schemas.knows(&api_version, kind(&object.node)) {
                let at = object.node.get("kind").unwrap_or(&object.node);
                self.at(
                    &rules::UNKNOWN_KIND,
                    object,
                    at,
                    format!("{} {}: no schema", api_version, kind(&object.node)),
                );
            }
        }
    }

    /// What the API server refuses for size alone: a request body over 3 MiB
    /// (k8s.io/apiserver pkg/server/config.go, `MaxRequestBodyBytes: 3 * 1024 * 1024`), and
    /// ConfigMap or Secret data over 1 MiB in total (k8s.io/kubernetes pkg/apis/core/types.go
    /// `MaxSecretSize`, enforced by ValidateConfigMap and ValidateSecret).
    pub(super) fn schema_too_large(&mut self) {
        const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
        const MAX_DATA_BYTES: u64 = 1024 * 1024;
        for object in self.objects() {
            let mut counter = ByteCounter(0);
            if serde_json::to_writer(&mut counter, &Applied(&object.node)).is_ok()
                && counter.0 > MAX_REQUEST_BYTES
            {
                self.at(
                    &rules::TOO_LARGE,
                    object,
                    &object.node,
                    format!(
                        "{}: {} bytes as JSON; the API server refuses requests over {MAX_REQUEST_BYTES}",
                        label(&object.node),
                        counter.0
                    ),
                );
            }
            let kind = kind(&object.node);
            if kind != "ConfigMap" && kind != "Secret" {
                continue;
            }
            let mut total = 0u64;
            for (field, encoded) in [
                ("data", kind == "Secret"),
                ("stringData", false),
                ("binaryData", true),
            ] {
                for (_, value) in object
                    .node
                    .get(field)
                    .map(Node::entries)
                    .unwrap_or_default()
                {
                    total += data_bytes(&value.scalar_text(), encoded);
                }
            }
            if total > MAX_DATA_BYTES {
                self.at(
                    &rules::TOO_LARGE,
                    object,
                    &object.node,
                    format!(
                        "{}: {total} bytes of data; the API server refuses a {kind} with more \
                         than {MAX_DATA_BYTES}",
                        label(&object.node)
                    ),
                );
            }
        }
    }
}

fn api_version(object: &Object) -> String {
    object
        .node
        .get("apiVersion")
        .map(Node::scalar_text)
        .unwrap_or_default()
}

/// The object as the API server gets it: Flux drops the SOPS metadata when it decrypts.
fn as_applied(object: &Object) -> serde_json::Value {
    let mut json = object.node.to_json();
    if let Some(map) = json.as_object_mut() {
        map.remove("sops");
    }
    json
}

/// An object written as JSON the way the API server gets it: without the SOPS metadata.
struct Applied<'a>(&'a Node);

impl serde::Serialize for Applied<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Map(entries) = &self.0.value else {
            return self.0.serialize(serializer);
        };
        let kept: Vec<&(Node, Node)> = entries
            .iter()
            .filter(|(k, _)| k.str() != Some("sops"))
            .collect();
        let mut map = serializer.serialize_map(Some(kept.len()))?;
        for (key, value) in kept {
            map.serialize_entry(&key.scalar_text(), value)?;
        }
        map.end()
    }
}

struct ByteCounter(u64);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes a data value holds: base64 decoded when `encoded`; a SOPS-encrypted value
/// (`ENC[AES256_GCM,data:<base64 ciphertext>,…]`) by its ciphertext, which is as long as the
/// plaintext.
fn data_bytes(value: &str, encoded: bool) -> u64 {
    let base64_len = |text: &str| (text.trim_end_matches('=').len() as u64 * 3) / 4;
    let plain = match value
        .strip_prefix("ENC[")
        .and_then(|rest| rest.split(",data:").nth(1))
        .and_then(|rest| rest.split(',').next())
    {
        Some(ciphertext) => base64_len(ciphertext),
        None => value.len() as u64,
    };
    if encoded { plain * 3 / 4 } else { plain }
}
