//! schema/*: every object against the strict schema of its kind, and the sizes the API server refuses.

use super::*;
use crate::check::findings::{self as rules};
use crate::check::object::*;
use crate::check::schema::{Outcome, Schemas};
use crate::check::tree::Object;
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn schemas(&mut self, schemas: &mut Schemas) {
        for object in self.objects() {
            let mut json = object.node.to_json();
            // Flux drops the SOPS metadata when it decrypts; the API server never sees it.
            if let Some(map) = json.as_object_mut() {
                map.remove("sops");
            }
            let api_version = object
                .node
                .get("apiVersion")
                .map(Node::scalar_text)
                .unwrap_or_default();
            match schemas.validate(&api_version, kind(&object.node), &json) {
                Outcome::Valid => {}
                Outcome::UnknownKind => {
                    let at = object.node.get("kind").unwrap_or(&object.node);
                    self.at(
                        &rules::UNKNOWN_KIND,
                        object,
                        at,
                        format!("{} {}: no schema", api_version, kind(&object.node)),
                    );
                }
                Outcome::Invalid(violations) => {
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
            self.size(object, &json);
        }
    }

    /// What the API server refuses for size alone: a request body over 3 MiB
    /// (k8s.io/apiserver pkg/server/config.go, `MaxRequestBodyBytes: 3 * 1024 * 1024`), and
    /// ConfigMap or Secret data over 1 MiB in total (k8s.io/kubernetes pkg/apis/core/types.go
    /// `MaxSecretSize`, enforced by ValidateConfigMap and ValidateSecret).
    pub(super) fn size(&mut self, object: &Object, json: &serde_json::Value) {
        const MAX_REQUEST_BYTES: u64 = 3 * 1024 * 1024;
        const MAX_DATA_BYTES: u64 = 1024 * 1024;
        let mut counter = ByteCounter(0);
        if serde_json::to_writer(&mut counter, json).is_ok() && counter.0 > MAX_REQUEST_BYTES {
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
            return;
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
                    "{}: {total} bytes of data; the API server refuses a {kind} with more than \
                     {MAX_DATA_BYTES}",
                    label(&object.node)
                ),
            );
        }
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
