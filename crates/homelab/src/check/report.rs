//! Findings on stdout: miette diagnostics with the file, line and snippet, or one JSON document.

use std::fmt;
use std::io::{IsTerminal, Write};

use std::sync::Arc;

use miette::{
    Diagnostic, GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode,
};

use super::Checked;
use super::findings::{Finding, Severity};

struct Shown<'a> {
    finding: &'a Finding,
    source: Option<NamedSource<Arc<str>>>,
    span: Option<(usize, usize)>,
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", printable(&self.finding.message))
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = &self.finding.at;
        if self.span.is_none() {
            write!(
                f,
                "{}: {}",
                printable(&at.file),
                printable(&self.finding.message)
            )
        } else {
            write!(f, "{}", printable(&self.finding.message))
        }
    }
}

impl std::error::Error for Shown<'_> {}

impl Diagnostic for Shown<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.finding.rule.id))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.finding.rule.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let rule = self.finding.rule;
        Some(Box::new(format!(
            "{}\nwhy: {}\nfix: {}",
            rule.summary, rule.why, rule.hint
        )))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.source.as_ref().map(|s| s as &dyn SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let (offset, len) = self.span?;
        let label = self
            .finding
            .object
            .as_deref()
            .map_or("here".to_owned(), printable);
        Some(Box::new(std::iter::once(LabeledSpan::at(
            offset..offset + len,
            label,
        ))))
    }
}

/// Text as it may reach a terminal: every control character but newline and tab shown as its
/// Unicode control picture (one character for one, so columns stay right), C1 controls and DEL
/// as U+FFFD/␡. A file's bytes never move the cursor or change colours.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c,
            '\u{0}'..='\u{1f}' => char::from_u32(0x2400 + c as u32).unwrap_or('\u{fffd}'),
            '\u{7f}' => '\u{2421}',
            c if c.is_control() => '\u{fffd}',
            c => c,
        })
        .collect()
}

/// Byte offset and length of the rest of the line from (line, col) — the token a finding is
/// about starts there.
fn span_of(text: &str, line: usize, col: usize) -> Option<(usize, usize)> {
    if line == 0 {
        return None;
    }
    let mut offset = 0;
    for (n, content) in text.split_inclusive('\n').enumerate() {
        if n + 1 == line {
            let start = content
                .char_indices()
                .nth(col)
                .map_or(content.len(), |(i, _)| i);
            let rest = content[start..].trim_end();
            return Some((offset + start, rest.len().max(1).min(content.len() - start)));
        }
        offset += content.len();
    }
    None
}

pub fn text(checked: &Checked) -> std::io::Result<()> {
    let theme = if std::io::stdout().is_terminal() {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = std::io::stdout().lock();
    // Each file's text once, made printable, shared by all of its findings.
    let mut printable_texts: std::collections::HashMap<&str, Arc<str>> =
        std::collections::HashMap::new();
    for finding in &checked.findings {
        let text = match printable_texts.get(finding.at.file.as_str()) {
            Some(text) => Some(Arc::clone(text)),
            None => checked
                .files
                .iter()
                .find(|f| f.path == finding.at.file)
                .map(|f| {
                    let text: Arc<str> = Arc::from(printable(&f.text));
                    printable_texts.insert(f.path.as_str(), Arc::clone(&text));
                    text
                }),
        };
        let span = text
            .as_deref()
            .and_then(|t| span_of(t, finding.at.line, finding.at.col));
        let shown = Shown {
            finding,
            source: span
                .and(text)
                .map(|t| NamedSource::new(printable(&finding.at.file), t)),
            span,
        };
        let mut rendered = String::new();
        if handler.render_report(&mut rendered, &shown).is_err() {
            rendered = format!("{}: {}\n", finding.at.file, finding.message);
        }
        // A plain first line that editors and grep understand, then the diagnostic.
        writeln!(
            out,
            "{}:{}:{}: {}[{}] {}",
            printable(&finding.at.file),
            finding.at.line,
            finding.at.col + 1,
            match finding.rule.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            },
            finding.rule.id,
            printable(&finding.message)
        )?;
        writeln!(out, "{rendered}")?;
    }
    Ok(())
}

#[derive(serde::Serialize)]
struct JsonFinding<'a> {
    rule: &'a str,
    severity: Severity,
    file: &'a str,
    line: usize,
    column: usize,
    object: Option<&'a str>,
    message: &'a str,
    summary: &'a str,
    why: &'a str,
    hint: &'a str,
}

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    errors: usize,
    warnings: usize,
    findings: Vec<JsonFinding<'a>>,
}

pub fn json(checked: &Checked) -> std::io::Result<()> {
    let report = JsonReport {
        errors: checked.count(Severity::Error),
        warnings: checked.count(Severity::Warning),
        findings: checked
            .findings
            .iter()
            .map(|f| JsonFinding {
                rule: f.rule.id,
                severity: f.rule.severity,
                file: &f.at.file,
                line: f.at.line,
                column: f.at.col + 1,
                object: f.object.as_deref(),
                message: &f.message,
                summary: f.rule.summary,
                why: f.rule.why,
                hint: f.rule.hint,
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::{printable, span_of};

    #[test]
    fn control_characters_are_shown_not_sent() {
        assert_eq!(
            printable("a\u{1b}[31mb\rc\n\td\u{9b}\u{7f}"),
            "a\u{241b}[31mb\u{240d}c\n\td\u{fffd}\u{2421}"
        );
    }

    #[test]
    fn spans_point_at_the_token() {
        let text = "a: 1\n  bee: two  \nc: 3";
        assert_eq!(span_of(text, 2, 2), Some((7, 8)));
        assert_eq!(&text[7..15], "bee: two");
        assert_eq!(span_of(text, 9, 0), None);
        assert_eq!(span_of(text, 0, 0), None);
    }
}
