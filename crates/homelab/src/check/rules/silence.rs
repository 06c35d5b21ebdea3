//! check/silence: the one way to silence a finding, and its own rule.

use super::*;
use crate::check::findings::{self as rules, Location};
use crate::check::yaml::Node;

impl Checker<'_> {
    pub(super) fn check_silence(&mut self) {
        for object in self.objects() {
            let Some(annotation) =
                object
                    .node
                    .path(&["metadata", "annotations", IGNORE_ANNOTATION])
            else {
                continue;
            };
            for line in annotation
                .scalar_text()
                .lines()
                .filter(|l| !l.trim().is_empty())
            {
                let (id, reason) = line.split_once(':').unwrap_or((line, ""));
                let known = rules::ALL.iter().any(|r| r.id == id.trim());
                if !known || reason.trim().is_empty() {
                    let at = Location::at(self.file(object), annotation);
                    self.emit(
                        &rules::SILENCE,
                        Place::Line(at),
                        if known {
                            format!("{IGNORE_ANNOTATION}: {} gives no reason", id.trim())
                        } else {
                            format!("{IGNORE_ANNOTATION}: no rule {:?}", id.trim())
                        },
                    );
                }
            }
        }
    }
}

pub(super) fn silenced(object: &Node, rule: &str) -> bool {
    object
        .path(&["metadata", "annotations", IGNORE_ANNOTATION])
        .map(Node::scalar_text)
        .is_some_and(|text| {
            text.lines().any(|line| {
                line.split_once(':')
                    .is_some_and(|(id, reason)| id.trim() == rule && !reason.trim().is_empty())
            })
        })
}
